"""Tests for shardio: PNG codec, shard writing, manifests, verification and URL resolution."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from simgan_dist.data.check import verify_shards
from simgan_dist.io.shardio import (
    MANIFEST_NAME,
    Manifest,
    decode_png,
    encode_png,
    read_manifest,
    resolve_shard_urls,
    write_shard,
    write_shards,
)


def _samples(n: int, shape=(28, 28), labels: bool = True, seed: int = 0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        yield f"s-{i:05d}", img, ({"label": i % 10, "x": np.float32(0.5)} if labels else None)


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Path, Manifest]:
    out = tmp_path / "corpus"
    return out, write_shards(_samples(25), out, "synth", samples_per_shard=10)


@pytest.mark.parametrize(
    "img",
    [
        np.random.default_rng(0).integers(0, 256, (7, 9), dtype=np.uint8),
        np.random.default_rng(1).integers(0, 256, (7, 9, 3), dtype=np.uint8),
        np.random.default_rng(2).integers(0, 65536, (7, 9), dtype=np.uint16),
    ],
    ids=["gray8", "rgb8", "depth16"],
)
def test_png_roundtrip(img: np.ndarray) -> None:
    out = decode_png(encode_png(img))
    assert out.dtype == img.dtype and out.shape == img.shape
    np.testing.assert_array_equal(out, img)


def test_png_rejects_other_dtypes() -> None:
    with pytest.raises(ValueError, match="float32"):
        encode_png(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError):
        decode_png(b"not a png")


def test_write_shards_manifest(corpus: tuple[Path, Manifest]) -> None:
    out, manifest = corpus
    assert [s.num_samples for s in manifest.shards] == [10, 10, 5]
    assert manifest.num_samples == 25
    assert manifest.image_shape == (1, 28, 28) and manifest.has_labels
    assert read_manifest(out) == manifest == read_manifest(out / MANIFEST_NAME)
    assert Manifest.from_json(manifest.to_json()) == manifest
    for info in manifest.shards:
        data = (out / info.name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == info.sha256 and len(data) == info.num_bytes
    assert not list(out.glob("*.tmp"))


def test_shards_readable_by_tarfile_and_webdataset(corpus: tuple[Path, Manifest]) -> None:
    out, manifest = corpus
    with tarfile.open(out / "synth-000000.tar") as tar:
        names = tar.getnames()
    assert names[:2] == ["s-00000.json", "s-00000.png"] and len(names) == 20
    urls = [str(out / s.name) for s in manifest.shards]
    dataset = wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples())
    samples = list(dataset)
    assert [s["__key__"] for s in samples] == [f"s-{i:05d}" for i in range(25)]
    expected = list(_samples(25))
    np.testing.assert_array_equal(decode_png(samples[3]["png"]), expected[3][1])
    assert json.loads(samples[3]["json"]) == {"label": 3, "x": 0.5}


def test_rebuild_is_byte_identical(tmp_path: Path, corpus: tuple[Path, Manifest]) -> None:
    again = write_shards(_samples(25), tmp_path / "again", "synth", samples_per_shard=10)
    assert again.shards == corpus[1].shards


def test_unlabeled_corpus_has_no_json(tmp_path: Path) -> None:
    manifest = write_shards(_samples(5, labels=False), tmp_path, "real", 10)
    assert not manifest.has_labels
    with tarfile.open(tmp_path / "real-000000.tar") as tar:
        assert all(name.endswith(".png") for name in tar.getnames())


def test_write_shards_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="duplicate"):
        write_shards([("a", np.zeros((2, 2), np.uint8), None)] * 2, tmp_path / "d", "x", 5)
    with pytest.raises(ValueError, match="key"):
        write_shards([("a.b", np.zeros((2, 2), np.uint8), None)], tmp_path / "k", "x", 5)
    mixed = [("a", np.zeros((2, 2), np.uint8), None), ("b", np.zeros((3, 2), np.uint8), None)]
    with pytest.raises(ValueError, match="shape"):
        write_shards(mixed, tmp_path / "m", "x", 5)
    with pytest.raises(ValueError, match="no samples"):
        write_shards([], tmp_path / "e", "x", 5)


def test_write_shard_single(tmp_path: Path) -> None:
    info = write_shard(tmp_path / "sub" / "one.tar", _samples(3))
    assert info.name == "one.tar" and info.num_samples == 3
    assert info.num_bytes == (tmp_path / "sub" / "one.tar").stat().st_size


def test_verify_ok(corpus: tuple[Path, Manifest]) -> None:
    assert verify_shards(str(corpus[0])) == []


def test_verify_detects_modified_shard(corpus: tuple[Path, Manifest]) -> None:
    out, _ = corpus
    shard = out / "synth-000001.tar"
    data = bytearray(shard.read_bytes())
    data[-2000] ^= 0xFF  # inside the tar's zero padding: the tar still reads, the checksum differs
    shard.write_bytes(bytes(data))
    problems = verify_shards(str(out))
    assert len(problems) == 1 and "synth-000001.tar: checksum" in problems[0]


def test_verify_detects_count_mismatch(corpus: tuple[Path, Manifest]) -> None:
    out, manifest = corpus
    # A shard swapped for another valid one with fewer samples, manifest checksums patched.
    info = write_shard(out / "synth-000000.tar", _samples(7))
    shards = (info, *manifest.shards[1:])
    broken = Manifest(manifest.name, shards, manifest.image_shape, manifest.has_labels)
    data = json.loads(broken.to_json())
    data["shards"][0]["num_samples"] = 10
    (out / MANIFEST_NAME).write_text(json.dumps(data))
    problems = verify_shards(str(out))
    assert problems == ["synth-000000.tar: 7 samples, manifest says 10"]


def test_verify_detects_truncated_and_missing(corpus: tuple[Path, Manifest]) -> None:
    out, _ = corpus
    shard = out / "synth-000000.tar"
    shard.write_bytes(shard.read_bytes()[:9000])
    (out / "synth-000002.tar").unlink()
    problems = "\n".join(verify_shards(str(out)))
    assert "synth-000000.tar: checksum" in problems and "unreadable" in problems
    assert "synth-000002.tar: missing" in problems


def test_resolve_forms(corpus: tuple[Path, Manifest]) -> None:
    out, manifest = corpus
    expected = [str(out / s.name) for s in manifest.shards]
    assert resolve_shard_urls(str(out)) == expected
    assert resolve_shard_urls(str(out / MANIFEST_NAME)) == expected
    assert resolve_shard_urls(f"{out}/synth-{{000000..000002}}.tar") == expected
    assert resolve_shard_urls(f"{out}/*.tar") == expected
    assert resolve_shard_urls(expected[1]) == expected[1:2]
    assert resolve_shard_urls(f"file://{out}") == expected
    assert resolve_shard_urls(f"file://{out}/synth-{{000000..000001}}.tar") == expected[:2]
    (out / MANIFEST_NAME).unlink()  # a bare directory of tars still works, in sorted order
    assert resolve_shard_urls(str(out)) == expected


def test_resolve_refuses_pipe_and_empty(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pipe:cat /x/a.tar"):
        resolve_shard_urls("pipe:cat /x/a.tar")
    assert resolve_shard_urls("pipe:cat /x/{a,b}.tar", allow_pipe=True) == [
        "pipe:cat /x/a.tar",
        "pipe:cat /x/b.tar",
    ]
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        resolve_shard_urls(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="nothing"):
        resolve_shard_urls(f"{tmp_path}/nothing-*.tar")
    with pytest.raises(FileNotFoundError, match="missing-000000"):
        resolve_shard_urls(f"{tmp_path}/missing-{{000000..000001}}.tar")
    with pytest.raises(ValueError, match="nosuchproto"):
        resolve_shard_urls("nosuchproto://host/x.tar")
    # fsspec protocols are all accepted; a host that does not resolve is an OSError naming it.
    with pytest.raises(OSError, match="ftp://no-such-host.invalid/x.tar"):
        resolve_shard_urls("ftp://no-such-host.invalid/x.tar")
