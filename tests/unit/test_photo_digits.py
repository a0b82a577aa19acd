"""The digits-on-photographs target: the photograph pool, the MNIST-M blend, the six corpora."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from simgan_dist.data import build
from simgan_dist.data.build import PHOTO_CORPORA, build_photo_digits, ensure_photo_digit_shards
from simgan_dist.data.reader import read_samples
from simgan_dist.data.sim import photos
from simgan_dist.data.sim.digits import DigitSimulator
from simgan_dist.data.sim.real_digits import real_train_labels, split_real_digits
from simgan_dist.io.shardio import MANIFEST_NAME, resolve_shard_urls

NUM_SYNTH = 40


@pytest.fixture
def fresh_cache():
    photos.load_photograph.cache_clear()  # a monkeypatched locator must not meet cached arrays
    yield
    photos.load_photograph.cache_clear()


def test_blend_is_the_absolute_difference_per_channel() -> None:
    digits = np.array([[[0, 255], [100, 30]]], np.uint8)  # (1, 2, 2)
    crops = np.array([[[[10, 200, 255], [0, 128, 255]], [[100, 0, 250], [20, 30, 40]]]], np.uint8)
    expected = [[[[10, 200, 255], [255, 127, 0]], [[0, 100, 150], [10, 0, 10]]]]
    out = photos.blend(digits, crops)
    assert out.dtype == np.uint8 and out.shape == (1, 2, 2, 3)
    np.testing.assert_array_equal(out, np.array(expected, np.uint8))
    with pytest.raises(ValueError, match="do not match"):
        photos.blend(digits, crops[..., :2])


def test_random_crops_are_seeded_windows_of_the_photographs() -> None:
    # Photographs whose pixels name their (photo, row, column): every crop must be one window.
    shapes = [(30, 40), (28, 28), (50, 31)]
    pool = []
    for k, (h, w) in enumerate(shapes):
        ys, xs = np.mgrid[:h, :w]
        pool.append(np.stack([np.full((h, w), k), ys, xs], -1).astype(np.uint8))
    crops = photos.random_crops(pool, 300, 28, np.random.default_rng(0))
    assert crops.shape == (300, 28, 28, 3) and crops.dtype == np.uint8
    for crop in crops:
        k, y, x = crop[0, 0]
        np.testing.assert_array_equal(crop, pool[k][y : y + 28, x : x + 28])
    assert set(crops[:, 0, 0, 0].tolist()) == {0, 1, 2}  # every photograph drawn
    again = photos.random_crops(pool, 300, 28, np.random.default_rng(0))
    assert np.array_equal(crops, again)
    assert not np.array_equal(crops, photos.random_crops(pool, 300, 28, np.random.default_rng(1)))
    prefix = photos.random_crops(pool, 10, 28, np.random.default_rng(0))
    assert np.array_equal(prefix, crops[:10])


def test_the_seven_photographs_load_as_read_only_rgb() -> None:
    loaded = photos.load_photographs()
    assert [p.name for p in photos.PHOTOGRAPHS] == [
        "astronaut", "chelsea", "coffee", "rocket", "ihc", "china", "flower",
    ]  # fmt: skip
    for photo, arr in zip(photos.PHOTOGRAPHS, loaded, strict=True):
        assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3, photo.name
        assert min(arr.shape[:2]) >= 28 and not arr.flags.writeable
        assert arr.std() > 10, photo.name  # a photograph, not a blank
    assert photos.load_photograph(photos.PHOTOGRAPHS[0]) is loaded[0]  # cached


def test_a_missing_photograph_stops_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_cache: None
) -> None:
    empty = tmp_path / "site"
    empty.mkdir()
    monkeypatch.setattr(photos, "_package_dir", lambda package: empty)
    with pytest.raises(ValueError) as err:
        build_photo_digits(tmp_path / "shards", num_synthetic=10)
    assert str(err.value) == (
        "digits-photo needs scikit-image's skimage/data/astronaut.png "
        "(pip install scikit-image): not found"
    )
    assert not (tmp_path / "shards").exists()  # stopped before writing anything

    monkeypatch.setattr(photos, "_package_dir", lambda package: None)
    with pytest.raises(ValueError, match=r"^digits-photo needs .*astronaut.* not installed$"):
        photos.load_photographs()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photo-shards")
    manifests = build_photo_digits(root, seed=0, num_synthetic=NUM_SYNTH, samples_per_shard=1000)
    assert [m.name for m in manifests] == list(PHOTO_CORPORA)
    return root


def _read(root: Path, name: str) -> tuple[list[str], np.ndarray, list[dict]]:
    rows = list(read_samples(resolve_shard_urls(str(root / name))))
    return [r[0] for r in rows], np.stack([r[1] for r in rows]), [r[2] for r in rows]


def test_photo_corpora_counts_channels_and_labels(built: Path) -> None:
    counts = dict(zip(PHOTO_CORPORA, (NUM_SYNTH,) * 3 + (3000, 2000, 3000), strict=True))
    for name, count in counts.items():
        manifest = json.loads((built / name / MANIFEST_NAME).read_text())
        assert (
            manifest["name"] == name and sum(s["num_samples"] for s in manifest["shards"]) == count
        )
        assert manifest["image_shape"] == [3, 28, 28], name
        assert manifest["has_labels"] == (name != "digits-photo-real-train"), name
    # The unlabeled real domain: PNG only, nothing a training job could read a label from.
    for shard in sorted((built / "digits-photo-real-train").glob("*.tar")):
        with tarfile.open(shard) as tar:
            assert all(n.endswith(".png") for n in tar.getnames())

    _, eval_images, eval_labels = split_real_digits(0)
    keys, images, metas = _read(built, "digits-photo-real-eval")
    assert keys == [f"real-eval-{i:07d}" for i in range(2000)]
    assert [m["label"] for m in metas] == eval_labels.tolist()
    # |crop - digit|: on ink (digit 255) the pixel is the crop's negative, so it differs from the
    # same crop's background; the images are colour, not grey.
    assert (images[..., 0] != images[..., 1]).mean() > 0.3

    train_keys, train_images, _ = _read(built, "digits-photo-real-train")
    labeled_keys, labeled_images, labeled_metas = _read(built, "digits-photo-real-train-labeled")
    assert train_keys == labeled_keys == [f"real-{i:07d}" for i in range(3000)]
    assert np.array_equal(train_images, labeled_images)
    assert [m["label"] for m in labeled_metas] == real_train_labels(0).tolist()
    # Train and eval crops come from different streams: no eval image repeats a train one.
    assert not np.array_equal(train_images[:2000], images)


def test_synthetic_arms_share_keys_labels_and_geometry(built: Path) -> None:
    keys, clean, clean_metas = _read(built, "digits-photo-synth")
    rkeys, randomized, rmetas = _read(built, "digits-photo-synth-randomized")
    ckeys, ceiling, cmetas = _read(built, "digits-photo-ceiling")
    assert keys == rkeys == ckeys == [f"synth-{i:07d}" for i in range(NUM_SYNTH)]
    labels = [DigitSimulator(0).label(i) for i in range(NUM_SYNTH)]
    for metas in (clean_metas, rmetas, cmetas):
        assert [m["label"] for m in metas] == labels
    assert {m["appearance"] for m in clean_metas} == {"clean"}
    assert {m["appearance"] for m in rmetas} == {"randomized"}
    assert {m["appearance"] for m in cmetas} == {"ceiling"}
    # Each corpus is what the simulator gives in that appearance.
    for i in (0, 17, NUM_SYNTH - 1):
        img, params = DigitSimulator(0, "clean").render(i)
        assert np.array_equal(clean[i], img) and clean_metas[i] == params
        img, params = DigitSimulator(0, "randomized").render(i)
        assert np.array_equal(randomized[i], img) and rmetas[i] == params
    # The ceiling is the target's recipe on the same grey digits, with crops from its own stream.
    rng = np.random.default_rng([0, build.CROP_STREAM, 0])
    crops = photos.random_crops(photos.load_photographs(), NUM_SYNTH, 28, rng)
    assert np.array_equal(ceiling, photos.blend(clean[..., 0], crops))
    again = build_photo_digits(
        built / "again", 0, NUM_SYNTH, 1000, corpora=["digits-photo-ceiling"]
    )
    first = json.loads((built / "digits-photo-ceiling" / MANIFEST_NAME).read_text())
    assert [s["sha256"] for s in first["shards"]] == [s.sha256 for s in again[0].shards]


def test_ensure_builds_only_the_missing_corpora(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in PHOTO_CORPORA[::2]:
        (tmp_path / name).mkdir()
        (tmp_path / name / MANIFEST_NAME).write_text("{}")
    asked: list[list[str]] = []
    monkeypatch.setattr(build, "build_photo_digits", lambda *a, corpora, **k: asked.append(corpora))
    ensure_photo_digit_shards(tmp_path, seed=0)
    assert asked == [list(PHOTO_CORPORA[1::2])]
    with pytest.raises(ValueError, match="unknown digits-photo corpora"):
        build_photo_digits(tmp_path, corpora=["digits-photo-nope"])
