"""Resuming a batch stream from its position: the same batches as an unbroken stream, without
opening the shards finished before, with loader workers or without."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from simgan_dist.data.catalog import EpochPlan
from simgan_dist.data.reader import StreamStats, batch_stream
from simgan_dist.io.shardio import resolve_shard_urls, write_shards

SHAPE = (1, 28, 28)


def _corpus(root: Path, n: int, per_shard: int) -> list[str]:
    rng = np.random.default_rng(0)
    samples = (
        (f"s-{i:04d}", rng.integers(0, 256, (28, 28), dtype=np.uint8), {"label": i % 10})
        for i in range(n)
    )
    write_shards(samples, root, "synth", per_shard)
    return resolve_shard_urls(str(root))


def _stream(urls: list[str], workers: int, stats: StreamStats | None = None, ends=None):
    plan = EpochPlan(tuple(urls), (1,) * len(urls), seed=5, world_size=2)
    return batch_stream(plan, 6, SHAPE, seed=5, rank=1, world_size=2, shuffle_window=16,
                        num_loader_workers=workers, stats=stats, on_shard_end=ends)  # fmt: skip


def _keys(batches) -> list[list[str]]:
    return [[m["__key__"] for m in metas] for _, metas in batches]


@pytest.mark.parametrize("workers", [0, 2])
def test_seek_continues_exactly_and_never_opens_finished_shards(tmp_path: Path, workers) -> None:
    # 48 shards: 24 per rank, 80 batches of 6 per epoch. The position is mid-epoch and
    # mid-window, and what is read after it (12 batches, prefetch, a window) stays in epoch 0.
    urls = _corpus(tmp_path / "c", 960, 20)
    unbroken = _stream(urls, workers)
    before = list(itertools.islice(unbroken, 45))
    position = unbroken.position()
    after = list(itertools.islice(unbroken, 12))
    # Every shard the stream reported finished, except those the current windows started in,
    # is deleted: a stream that opened one would report it unreadable.
    finished: list[str] = []
    replay = _stream(urls, workers, ends=lambda epoch, url: finished.append(url))
    list(itertools.islice(replay, 45))
    current = {urls_in[c["shard"]] for urls_in, c in _cursor_shards(urls, position, workers)}
    gone = [u for u in dict.fromkeys(finished) if u not in current]
    assert len(gone) >= 10  # the test means something: most of the rank's shards are gone
    for url in gone:
        Path(url).unlink()
    stats, reported = StreamStats(), []
    resumed = _stream(urls, workers, stats, ends=lambda epoch, url: reported.append(url))
    resumed.seek(position)
    again = list(itertools.islice(resumed, 12))
    assert _keys(again) == _keys(after)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(again, after, strict=True))
    assert stats.num_skipped == 0 and stats.num_samples == 12 * 6
    assert resumed.position() == unbroken.position()
    # Shards reported before the checkpoint are not reported again (the catalog has them).
    assert not set(reported) & (set(finished) - current)
    assert {m["__epoch__"] for _, metas in before + after for m in metas} == {0}


def _cursor_shards(urls: list[str], position: dict, workers: int):
    """(the worker's shard list in the cursor's epoch, cursor) for each loader worker's cursor."""
    plan = EpochPlan(tuple(urls), (1,) * len(urls), seed=5, world_size=2)
    num = max(1, workers)
    for worker, cursor in position["cursors"].items():
        share = plan.for_rank(cursor["epoch"], 1).urls
        yield share[int(worker) :: num], cursor


def test_seek_after_the_first_batch_is_refused(tmp_path: Path) -> None:
    stream = _stream(_corpus(tmp_path / "c", 80, 20), 0)
    next(stream)
    with pytest.raises(RuntimeError, match="before the first batch"):
        stream.seek(stream.position())


def test_a_training_rank_resumes_from_a_checkpointed_position(debug_overrides, tmp_path) -> None:
    # What a training checkpoint saves for the data (torch.save, then weights_only loading).
    from simgan_dist.config import load_config
    from simgan_dist.data.catalog import ShardCatalog, stream_seed
    from simgan_dist.data.streams import make_batch_source

    cfg = load_config(preset="debug", overrides=debug_overrides(**{"data.shuffle_window": 32}))

    def batches():
        catalogs = {
            corpus: ShardCatalog.open(getattr(cfg.data, corpus), stream_seed(cfg, corpus), 2)
            for corpus in ("synthetic", "real")
        }
        return make_batch_source(cfg, 1, 2, StreamStats(), torch.device("cpu"), catalogs)

    unbroken = batches()
    for _ in range(7):
        unbroken.next_synthetic()
    for _ in range(3):
        unbroken.next_real()
    torch.save(unbroken.state_dict(), tmp_path / "data.pt")
    state = torch.load(tmp_path / "data.pt", weights_only=True)
    assert {"synthetic_position", "real_position"} <= set(state)
    resumed = batches()
    resumed.load_state_dict(state)
    assert (resumed.num_synthetic, resumed.num_real) == (7, 3)
    for _ in range(3):
        assert torch.equal(resumed.next_synthetic(), unbroken.next_synthetic())
        assert torch.equal(resumed.next_real(), unbroken.next_real())
