"""Tests for the corpus builders and the bundled real-digit split."""

from __future__ import annotations

import itertools
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from simgan_dist.data.build import (
    build_from_folder,
    build_real_digits,
    build_synthetic_digits,
    build_synthetic_eyes,
)
from simgan_dist.data.check import verify_shards
from simgan_dist.data.reader import batch_stream, load_arrays, read_samples
from simgan_dist.data.sim.real_digits import load_real_digits, split_indices, split_real_digits
from simgan_dist.io.shardio import resolve_shard_urls


def _tar_names(directory: Path) -> list[str]:
    names = []
    for shard in sorted(directory.glob("*.tar")):
        with tarfile.open(shard) as tar:
            names += tar.getnames()
    return names


def test_real_digits_load() -> None:
    images, labels = load_real_digits()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [500] * 10
    assert images.max() == 255 and images.min() == 0


def test_real_digits_split_disjoint_stratified_deterministic() -> None:
    _, labels = load_real_digits()
    train_idx, eval_idx = split_indices(seed=0)
    assert len(train_idx) == 3000 and len(eval_idx) == 2000
    assert not set(train_idx) & set(eval_idx)
    assert sorted(np.concatenate([train_idx, eval_idx]).tolist()) == list(range(5000))
    assert np.bincount(labels[eval_idx]).tolist() == [200] * 10
    assert np.bincount(labels[train_idx]).tolist() == [300] * 10
    # Shuffled: shards cut from the (class-sorted) csv would otherwise hold one digit each.
    assert len(set(labels[train_idx[:50]].tolist())) == 10
    again = split_indices(seed=0)
    assert np.array_equal(again[0], train_idx) and np.array_equal(again[1], eval_idx)
    assert not np.array_equal(split_indices(seed=1)[1], eval_idx)
    train, evaluation, eval_labels = split_real_digits(seed=0, num_eval=500)
    assert train.shape == (4500, 28, 28) and evaluation.shape == (500, 28, 28)
    assert np.bincount(eval_labels).tolist() == [50] * 10
    with pytest.raises(ValueError, match="multiple of 10"):
        split_indices(num_eval=15)


def test_build_real_digits(tmp_path: Path) -> None:
    train, evaluation = build_real_digits(tmp_path / "train", tmp_path / "eval", 1000)
    assert train.num_samples == 3000 and evaluation.num_samples == 2000
    assert not train.has_labels and evaluation.has_labels
    assert train.image_shape == evaluation.image_shape == (1, 28, 28)
    # The unlabeled real domain: PNG only, nothing a training job could read a label from.
    assert all(name.endswith(".png") for name in _tar_names(tmp_path / "train"))
    _, eval_images, eval_labels = split_real_digits(seed=0)
    rows = list(read_samples(resolve_shard_urls(str(tmp_path / "eval"))))
    assert [meta["label"] for _, _, meta, _ in rows] == eval_labels.tolist()
    np.testing.assert_array_equal(np.stack([img for _, img, _, _ in rows]), eval_images)
    assert verify_shards(str(tmp_path / "train")) == verify_shards(str(tmp_path / "eval")) == []


def test_build_synthetic_digits(tmp_path: Path) -> None:
    manifest = build_synthetic_digits(tmp_path / "digits-synth", 30, 10, seed=0)
    assert manifest.name == "digits-synth" and manifest.num_samples == 30
    assert len(manifest.shards) == 3 and manifest.image_shape == (1, 28, 28)
    assert manifest.has_labels and verify_shards(str(tmp_path / "digits-synth")) == []
    images, metas = load_arrays(str(tmp_path / "digits-synth"))
    assert [m["__key__"] for m in metas] == [f"synth-{i:07d}" for i in range(30)]
    assert sorted(m["label"] for m in metas) == sorted(list(range(10)) * 3)
    again = build_synthetic_digits(tmp_path / "again", 30, 10, seed=0)
    assert again.shards == manifest.shards  # same seed, byte-identical shards
    urls = resolve_shard_urls(str(tmp_path / "digits-synth"))
    batch, batch_metas = next(batch_stream(urls, 16, (1, 28, 28), seed=0, shuffle_window=8))
    assert batch.shape == (16, 1, 28, 28) and all("label" in m for m in batch_metas)


def test_build_synthetic_eyes(tmp_path: Path) -> None:
    manifest = build_synthetic_eyes(tmp_path / "eyes", 12, 5, seed=0)
    assert manifest.num_samples == 12 and manifest.image_shape == (1, 35, 55)
    assert [s.num_samples for s in manifest.shards] == [5, 5, 2]
    images, metas = load_arrays(str(tmp_path / "eyes"))
    assert images.shape == (12, 35, 55) and len(metas[0]["gaze"]) == 2


def _write_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    (root / "sub").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(root / "b.png")
    Image.fromarray(rng.integers(0, 256, (12, 10), dtype=np.uint8)).save(root / "a.jpg")
    Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(root / "sub/c.v2.png")
    (root / "b.json").write_text(json.dumps({"gaze": [0.1, -0.2]}))
    (root / "sub/c.v2.json").write_text(json.dumps({"gaze": [0.3, 0.4]}))
    (root / "notes.txt").write_text("not an image")


def test_build_from_folder(tmp_path: Path) -> None:
    _write_folder(tmp_path / "in")
    manifest = build_from_folder(tmp_path / "in", tmp_path / "out", 2)
    assert manifest.name == "in" and manifest.num_samples == 3
    assert manifest.image_shape == (1, 12, 10) and not manifest.has_labels
    rows = list(read_samples(resolve_shard_urls(str(tmp_path / "out"))))
    assert [(key, meta) for key, _, meta, _ in rows] == [
        ("a", {}),
        ("b", {"gaze": [0.1, -0.2]}),
        ("sub_c_v2", {"gaze": [0.3, 0.4]}),
    ]
    assert "a.json" not in _tar_names(tmp_path / "out")
    expected = np.array(Image.open(tmp_path / "in/b.png").convert("L"))
    np.testing.assert_array_equal(rows[1][1], expected)


def test_build_from_folder_rgb_resize_and_depth(tmp_path: Path) -> None:
    _write_folder(tmp_path / "in")
    rgb = build_from_folder(tmp_path / "in", tmp_path / "rgb", 10, grayscale=False, size=(6, 8))
    assert rgb.image_shape == (3, 6, 8)
    images, _ = load_arrays(str(tmp_path / "rgb"))
    assert images.shape == (3, 6, 8, 3)
    depth = np.random.default_rng(0).integers(0, 65536, (2, 9, 7), dtype=np.uint16)
    (tmp_path / "depth").mkdir()
    for i, d in enumerate(depth):
        Image.fromarray(d).save(tmp_path / "depth" / f"d{i}.png")
    manifest = build_from_folder(tmp_path / "depth", tmp_path / "depth-out", 10)
    assert manifest.image_shape == (1, 9, 7)
    images, _ = load_arrays(str(tmp_path / "depth-out"))
    assert images.dtype == np.uint16
    np.testing.assert_array_equal(images, depth)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .png"):
        build_from_folder(tmp_path / "empty", tmp_path / "x", 1)
    stream = batch_stream(resolve_shard_urls(str(tmp_path / "depth-out")), 2, (1, 9, 7), seed=0)
    batch, _ = next(itertools.islice(stream, 1))
    assert batch.min() >= -1 and batch.max() <= 1
