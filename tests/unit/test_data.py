"""Tests for data: tensor conversion, the per-rank batch stream, bad data, and finite readers."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds

from simgan_dist.data.reader import (
    BadSampleError,
    StreamStats,
    batch_stream,
    load_arrays,
    read_samples,
)
from simgan_dist.io.shardio import encode_png, resolve_shard_urls, write_shards
from simgan_dist.model.pixels import to_tensor, to_uint8

SHAPE = (1, 28, 28)


def _digits(n: int, prefix: str = "s", labels: bool = True):
    rng = np.random.default_rng(0)
    for i in range(n):
        yield (
            f"{prefix}-{i:04d}",
            rng.integers(0, 256, (28, 28), dtype=np.uint8),
            ({"label": i % 10} if labels else None),
        )


def _corpus(root: Path, n: int, per_shard: int, labels: bool = True) -> list[str]:
    write_shards(_digits(n, labels=labels), root, "synth", per_shard)
    return resolve_shard_urls(str(root))


@pytest.fixture
def urls(tmp_path: Path) -> list[str]:
    return _corpus(tmp_path / "c", 40, 10)  # 4 shards of 10


def _keys(stream, num_batches: int) -> list[str]:
    return [m["__key__"] for _, metas in itertools.islice(stream, num_batches) for m in metas]


def test_tensor_conversion_roundtrip() -> None:
    gray = np.random.default_rng(0).integers(0, 256, (5, 7), dtype=np.uint8)
    x = to_tensor(gray)
    assert x.shape == (1, 5, 7) and x.dtype == torch.float32
    # Levels map to their intervals' centres, inside tanh's open range (-1, 1).
    assert to_tensor(np.array([[0, 255]], np.uint8)).tolist() == [[[-255 / 256, 255 / 256]]]
    np.testing.assert_array_equal(to_uint8(x), gray)
    rgb = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert to_tensor(rgb).shape == (3, 5, 7)
    np.testing.assert_array_equal(to_uint8(torch.stack([to_tensor(rgb)] * 2)), np.stack([rgb] * 2))
    depth = np.array([[0, 65535, 32768]], np.uint16)
    assert torch.allclose(to_tensor(depth), torch.tensor([[[-1.0, 1.0, 0.0]]]), atol=1e-4)
    assert to_uint8(torch.tensor([[[-3.0, -1.0, 1.0, 3.0]]])).tolist() == [[0, 0, 255, 255]]
    # Each level's whole interval comes back to it, so R's output need not hit centres exactly.
    edges = torch.tensor([[[-1.0 + 1e-6, -1.0 + 2 / 256 - 1e-6, -1.0 + 2 / 256]]])
    assert to_uint8(edges).tolist() == [[0, 0, 1]]


def test_batches_shape_range_meta(urls: list[str]) -> None:
    stats = StreamStats()
    stream = batch_stream(urls, 8, SHAPE, seed=0, shuffle_window=16, stats=stats)
    for images, metas in itertools.islice(stream, 12):  # 96 samples: more than two epochs
        assert images.shape == (8, *SHAPE) and images.dtype == torch.float32
        assert images.min() >= -1.0 and images.max() <= 1.0
        assert len(metas) == 8
        assert all(set(m) == {"label", "__key__", "__url__", "__epoch__"} for m in metas)
        assert all(m["label"] == int(m["__key__"][-4:]) % 10 for m in metas)
    assert stats.num_samples == 96 and stats.num_skipped == 0


def test_deterministic_for_seed(urls: list[str]) -> None:
    a = list(itertools.islice(batch_stream(urls, 8, SHAPE, seed=3, shuffle_window=16), 10))
    b = list(itertools.islice(batch_stream(urls, 8, SHAPE, seed=3, shuffle_window=16), 10))
    assert [m for _, m in a] == [m for _, m in b]
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(a, b, strict=True))
    other = _keys(batch_stream(urls, 8, SHAPE, seed=4, shuffle_window=16), 10)
    assert other != [m["__key__"] for _, ms in a for m in ms]


def test_epochs_reshuffle_shards(urls: list[str]) -> None:
    keys = _keys(batch_stream(urls, 10, SHAPE, seed=0, shuffle_window=1), 40)  # ten epochs
    epochs = [keys[i : i + 40] for i in range(0, 400, 40)]
    assert all(sorted(e) == sorted(epochs[0]) for e in epochs)  # every epoch is the whole corpus
    assert len({tuple(e) for e in epochs}) > 1  # ...in a shard order that changes


def test_two_ranks_disjoint_and_complete(urls: list[str]) -> None:
    # shuffle_window=1 keeps epochs apart: each rank's first 20 samples are its first epoch.
    first = [
        _keys(batch_stream(urls, 5, SHAPE, seed=0, rank=r, world_size=2, shuffle_window=1), 4)
        for r in range(2)
    ]
    assert not set(first[0]) & set(first[1])
    assert sorted(first[0] + first[1]) == [f"s-{i:04d}" for i in range(40)]
    # With a shuffle buffer, the shares of each epoch stay disjoint and complete, while the
    # catalog deals the shards anew each epoch.
    by_epoch: dict[int, list[list[str]]] = {}
    for r in range(2):
        stream = batch_stream(urls, 8, SHAPE, seed=0, rank=r, world_size=2, shuffle_window=16)
        for _, metas in itertools.islice(stream, 30):
            for m in metas:
                by_epoch.setdefault(m["__epoch__"], [[], []])[r].append(m["__key__"])
    for epoch in range(3):  # epochs that every rank has finished
        keys = by_epoch[epoch]
        assert not set(keys[0]) & set(keys[1]), epoch
        assert sorted(keys[0] + keys[1]) == [f"s-{i:04d}" for i in range(40)], epoch
    assert len({tuple(sorted(by_epoch[e][0])) for e in range(3)}) > 1  # dealt anew


def test_fewer_shards_than_ranks(tmp_path: Path) -> None:
    urls = _corpus(tmp_path, 12, 6)  # 2 shards, 3 ranks: split by sample position
    shares = [
        set(_keys(batch_stream(urls, 4, SHAPE, seed=1, rank=r, world_size=3, shuffle_window=4), 6))
        for r in range(3)
    ]
    assert all(len(s) == 4 for s in shares)
    assert not (shares[0] & shares[1] or shares[0] & shares[2] or shares[1] & shares[2])
    assert len(set().union(*shares)) == 12


def test_rank_env_vars_do_not_matter(urls: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # Ray Train sets these; a WebDataset without an explicit nodesplitter would raise.
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    keys = _keys(batch_stream(urls, 10, SHAPE, seed=0, shuffle_window=1), 4)
    assert sorted(keys) == [f"s-{i:04d}" for i in range(40)]
    with pytest.raises(ValueError, match="nodesplitter"):  # the trap this design avoids
        next(iter(wds.WebDataset(urls, shardshuffle=False)))


def test_loader_workers(urls: list[str], tmp_path: Path) -> None:
    def run(seed: int, location: list[str], batch: int, n: int) -> list[str]:
        return _keys(
            batch_stream(location, batch, SHAPE, seed=seed, shuffle_window=1, num_loader_workers=2),
            n,
        )

    keys = run(0, urls, 5, 8)  # two workers x two shards x 10 samples: one epoch
    assert sorted(keys) == [f"s-{i:04d}" for i in range(40)]
    assert run(0, urls, 5, 8) == keys  # deterministic with worker processes too
    one_shard = _corpus(tmp_path / "one", 10, 10)  # fewer shards than workers: sample split
    assert sorted(run(0, one_shard, 5, 2)) == [f"s-{i:04d}" for i in range(10)]


def test_real_shards_without_json(tmp_path: Path) -> None:
    urls = _corpus(tmp_path, 10, 5, labels=False)
    images, metas = next(batch_stream(urls, 4, SHAPE, seed=0))
    assert images.shape == (4, *SHAPE)
    assert all(set(m) == {"__key__", "__url__", "__epoch__"} for m in metas)


def _bad_corpus(root: Path) -> tuple[list[str], str]:
    """A good shard, a shard with an undecodable PNG and a wrong-size image, a truncated shard."""
    good = _corpus(root / "good", 20, 10)
    bad = str(root / "bad.tar")
    with wds.TarWriter(bad, encoder=False) as w:
        w.write({"__key__": "ok-0", "png": encode_png(np.zeros((28, 28), np.uint8))})
        w.write({"__key__": "corrupt-1", "png": b"\x89PNG\r\n\x1a\n garbage"})
        w.write({"__key__": "small-2", "png": encode_png(np.zeros((20, 20), np.uint8))})
        w.write({"__key__": "ok-3", "png": encode_png(np.zeros((28, 28), np.uint8))})
    truncated = root / "trunc.tar"
    data = Path(good[1]).read_bytes()
    truncated.write_bytes(data[: len(data) // 2 + 100])
    return [good[0], bad, str(truncated)], bad


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_data_skipped_and_counted(tmp_path: Path, workers: int) -> None:
    urls, bad = _bad_corpus(tmp_path)
    stats = StreamStats()
    stream = batch_stream(
        urls, 4, SHAPE, seed=0, shuffle_window=1, num_loader_workers=workers, stats=stats
    )
    for images, _ in itertools.islice(stream, 20):  # a few epochs of about 16 good samples
        assert images.shape == (4, *SHAPE)
    assert stats.num_skipped >= 6  # 3 bad samples per epoch, reported with url and key
    text = "\n".join(stats.skipped)
    assert f"{bad} key corrupt-1" in text and f"{bad} key small-2" in text
    assert "trunc.tar key after s-00" in text and "damaged tar: ReadError: truncated" in text


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_data_stop_raises_with_url_and_key(tmp_path: Path, workers: int) -> None:
    urls, bad = _bad_corpus(tmp_path)
    for url, needle in [(bad, "corrupt-1"), (urls[2], "trunc.tar key after")]:
        stream = batch_stream(
            [url],
            1,
            SHAPE,
            seed=0,
            shuffle_window=1,
            num_loader_workers=workers,
            on_bad_sample="stop",
        )
        with pytest.raises(BadSampleError, match=needle) as info:
            list(itertools.islice(stream, 50))
        assert url in str(info.value)
    stream = batch_stream([bad], 1, (1, 20, 20), seed=0, shuffle_window=1, on_bad_sample="stop")
    with pytest.raises(
        ValueError, match=r"ok-0: ValueError: image is 28x28 \(height x width, from its header\)"
    ):
        list(itertools.islice(stream, 5))


def test_all_bad_share_raises_instead_of_hanging(tmp_path: Path) -> None:
    urls, bad = _bad_corpus(tmp_path)
    stream = batch_stream([bad], 4, (3, 28, 28), seed=0)
    with pytest.raises(ValueError, match="no usable samples"):
        next(stream)


def test_read_samples_and_load_arrays(tmp_path: Path) -> None:
    urls = _corpus(tmp_path / "c", 25, 10)
    rows = list(read_samples(urls))
    assert [k for k, *_ in rows] == [f"s-{i:04d}" for i in range(25)]
    key, img, meta, url = rows[13]
    assert img.shape == (28, 28) and img.dtype == np.uint8
    assert meta == {"label": 3} and url == urls[1]
    images, metas = load_arrays(str(tmp_path / "c"))
    assert images.shape == (25, 28, 28) and metas[13]["__key__"] == "s-0013"
    np.testing.assert_array_equal(images[13], img)
    assert load_arrays(str(tmp_path / "c"), limit=5)[0].shape == (5, 28, 28)


def test_read_samples_bad_data(tmp_path: Path) -> None:
    urls, bad = _bad_corpus(tmp_path)
    stats = StreamStats()
    keys = [k for k, *_ in read_samples(urls, stats=stats, image_shape=SHAPE)]
    assert "ok-0" in keys and "ok-3" in keys and "corrupt-1" not in keys
    assert stats.num_skipped == 3 and stats.num_samples == len(keys)
    with pytest.raises(BadSampleError, match="corrupt-1"):
        list(read_samples(urls, on_bad_sample="stop"))
