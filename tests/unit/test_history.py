"""History buffer: it fills, replaces and samples uniformly, repeats under a seed, and resumes."""

from __future__ import annotations

import io

import pytest
import torch
from scipy.stats import chisquare

from simgan_dist.model.history import HistoryBuffer, history_count, mix_fake_batch

SHAPE = (1, 2, 3)


def _images(values: list[float]) -> torch.Tensor:
    # Image i is constant with value values[i], so a slot's content identifies the image.
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, *SHAPE).clone()


def _ids(images: torch.Tensor) -> list[int]:
    return [int(v) for v in images[:, 0, 0, 0].tolist()]


def _storage(buf: HistoryBuffer) -> torch.Tensor:
    return buf.state_dict()["storage"]


def test_it_fills() -> None:
    buf = HistoryBuffer(capacity=10, image_shape=SHAPE, seed=0)
    pushed: list[int] = []
    for k in range(1, 6):
        batch = list(range(100 * k, 100 * k + 3))
        buf.push(_images(batch))
        pushed += batch
        assert buf.num_filled == min(3 * k, 10)
        if 3 * k <= 10:  # before full: slots hold exactly what was pushed, in order
            assert _ids(_storage(buf)) == pushed
    assert len(_storage(buf)) == 10
    assert set(_ids(_storage(buf))) <= set(pushed)
    # Contents are copies: changing the caller's tensor afterwards does not reach the buffer.
    x = _images([7.0])
    buf2 = HistoryBuffer(capacity=4, image_shape=SHAPE, seed=0)
    buf2.push(x)
    x.fill_(-1)
    assert _ids(_storage(buf2)) == [7]


def test_full_buffer_replaces_exactly_n_distinct_slots() -> None:
    buf = HistoryBuffer(capacity=20, image_shape=SHAPE, seed=1)
    buf.push(_images([float(i) for i in range(20)]))
    for step in range(10):
        before = _storage(buf)
        new = [1000.0 + 10 * step + j for j in range(5)]
        buf.push(_images(new))
        after = _storage(buf)
        changed = (before != after).flatten(1).any(dim=1)
        assert int(changed.sum()) == 5
        assert sorted(_ids(after[changed])) == [int(v) for v in new]
        assert buf.num_filled == 20


def test_partial_then_full_push() -> None:
    buf = HistoryBuffer(capacity=5, image_shape=SHAPE, seed=0)
    buf.push(_images([0.0, 1.0, 2.0]))
    buf.push(_images([10.0, 11.0, 12.0, 13.0]))  # 2 fill free slots, 2 replace random ones
    ids = _ids(_storage(buf))
    assert buf.num_filled == 5
    assert ids[3] in (10, 12, 13) and ids[4] in (11, 12, 13)  # filled in order, maybe replaced
    assert {12, 13} <= set(ids)  # both replacements landed, on distinct slots


def test_sampling_is_uniform() -> None:
    capacity, draws = 50, 20_000
    buf = HistoryBuffer(capacity=capacity, image_shape=SHAPE, seed=2)
    buf.push(_images([float(i) for i in range(capacity)]))
    counts = torch.zeros(capacity)
    for _ in range(draws // 4):
        ids = torch.tensor(_ids(buf.sample(4)))
        assert len(set(ids.tolist())) == 4  # no repeats within one draw
        counts += torch.bincount(ids, minlength=capacity)
    assert counts.sum() == draws
    assert chisquare(counts.numpy()).pvalue > 0.001


def test_sampling_covers_only_filled_slots() -> None:
    buf = HistoryBuffer(capacity=100, image_shape=SHAPE, seed=3)
    buf.push(_images([5.0, 6.0, 7.0]))
    assert sorted(_ids(buf.sample(3))) == [5, 6, 7]  # a permutation: without replacement
    assert set(_ids(buf.sample(50))) <= {5, 6, 7}  # more than filled: with replacement
    with pytest.raises(RuntimeError, match="empty"):
        HistoryBuffer(capacity=4, image_shape=SHAPE, seed=0).sample(1)


def test_replaced_slots_are_uniform() -> None:
    capacity, pushes = 40, 4000
    buf = HistoryBuffer(capacity=capacity, image_shape=SHAPE, seed=4)
    buf.push(_images([0.0] * capacity))
    counts = torch.zeros(capacity)
    for _ in range(pushes):
        buf._storage.zero_()  # white-box: mark all slots old, then see which get replaced
        buf.push(_images([1.0, 1.0]))
        counts += (buf._storage[:, 0, 0, 0] == 1).float()
    assert counts.sum() == 2 * pushes
    assert chisquare(counts.numpy()).pvalue > 0.001


def _run(buf: HistoryBuffer, steps: int) -> list[list[int]]:
    out = []
    for step in range(steps):
        buf.push(_images([float(100 * step + j) for j in range(4)]))
        out.append(_ids(buf.sample(3)))
    return out


def test_seeded_runs_repeat_and_seeds_differ() -> None:
    a = _run(HistoryBuffer(8, SHAPE, seed=11), 20)
    b = _run(HistoryBuffer(8, SHAPE, seed=11), 20)
    c = _run(HistoryBuffer(8, SHAPE, seed=12), 20)
    assert a == b
    assert a != c


def test_state_dict_roundtrip_continues_identically() -> None:
    original = HistoryBuffer(8, SHAPE, seed=5)
    _run(original, 5)  # full, generator advanced
    blob = io.BytesIO()
    torch.save(original.state_dict(), blob)
    blob.seek(0)
    state = torch.load(blob, weights_only=True)
    restored = HistoryBuffer(8, SHAPE, seed=999)  # the seed must not matter after loading
    restored.load_state_dict(state)
    assert restored.num_filled == original.num_filled
    assert torch.equal(_storage(restored), _storage(original))
    assert _run(restored, 10) == _run(original, 10)


def test_state_dict_of_partly_filled_buffer() -> None:
    buf = HistoryBuffer(8, SHAPE, seed=5)
    buf.push(_images([1.0, 2.0]))
    restored = HistoryBuffer(8, SHAPE, seed=0)
    restored.load_state_dict(buf.state_dict())
    restored.push(_images([3.0]))
    assert _ids(_storage(restored)) == [1, 2, 3]
    with pytest.raises(ValueError, match="image shape"):
        HistoryBuffer(8, (1, 3, 3), seed=0).load_state_dict(buf.state_dict())


def test_state_dict_into_other_capacity() -> None:
    # Resuming on another worker count changes each rank's share of B.
    buf = HistoryBuffer(6, SHAPE, seed=5)
    buf.push(_images([float(i) for i in range(6)]))
    smaller = HistoryBuffer(4, SHAPE, seed=0)
    smaller.load_state_dict(buf.state_dict())
    assert smaller.num_filled == 4 and _ids(_storage(smaller)) == [0, 1, 2, 3]
    larger = HistoryBuffer(8, SHAPE, seed=0)
    larger.load_state_dict(buf.state_dict())
    larger.push(_images([10.0, 11.0, 12.0]))  # two free slots fill first, then one replaces
    ids = _ids(_storage(larger))
    assert larger.num_filled == 8 and ids[6] in (10, 12) and ids[7] in (11, 12) and 12 in ids


def test_push_checks_shape() -> None:
    with pytest.raises(ValueError, match="shape"):
        HistoryBuffer(4, SHAPE, seed=0).push(torch.zeros(2, 1, 3, 2))


def test_history_count() -> None:
    assert history_count(512, 0.5) == 256
    assert history_count(3, 0.5) == 2  # half rounds up, not to even
    assert history_count(5, 0.5) == 3
    assert history_count(10, 0.3) == 3
    assert history_count(8, 0.0) == 0
    assert history_count(4, 1.0) == 4


def test_mix_fake_batch_composition() -> None:
    buf = HistoryBuffer(capacity=16, image_shape=SHAPE, seed=6)
    buf.push(_images([float(100 + i) for i in range(16)]))
    current = _images([float(i) for i in range(8)])
    mixed = mix_fake_batch(current, buf, 0.5)
    assert mixed.shape == current.shape and mixed.dtype == current.dtype
    assert _ids(mixed[:4]) == [0, 1, 2, 3]
    hist = _ids(mixed[4:])
    assert all(100 <= i < 116 for i in hist) and len(set(hist)) == 4
    assert buf.num_filled == 16  # mixing does not push
    assert _ids(mix_fake_batch(current, buf, 0.25)[:6]) == list(range(6))


def test_mix_fake_batch_passthrough_and_short_buffer() -> None:
    current = _images([float(i) for i in range(8)])
    assert mix_fake_batch(current, None, 0.5) is current
    empty = HistoryBuffer(capacity=16, image_shape=SHAPE, seed=0)
    assert mix_fake_batch(current, empty, 0.5) is current
    short = HistoryBuffer(capacity=16, image_shape=SHAPE, seed=0)
    short.push(_images([100.0, 101.0]))
    assert mix_fake_batch(current, short, 0.0) is current
    mixed = mix_fake_batch(current, short, 0.5)  # wants 4, holds 2: 6 current + 2 history
    assert _ids(mixed[:6]) == list(range(6))
    assert sorted(_ids(mixed[6:])) == [100, 101]


def test_training_loop_order() -> None:
    # mix, D step, then push: the buffer's first images are the first step's refined ones.
    buf = HistoryBuffer(capacity=6, image_shape=SHAPE, seed=0)
    n_hist = history_count(4, 0.5)
    for step in range(3):
        refined = _images([float(10 * step + j) for j in range(4)])
        fake = mix_fake_batch(refined, buf, 0.5)
        if step > 0:  # the history half comes from earlier steps only
            assert all(i < 10 * step for i in _ids(fake[n_hist:]))
        buf.push(refined[:n_hist])
    assert _ids(_storage(buf)) == [0, 1, 10, 11, 20, 21]
