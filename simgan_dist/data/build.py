"""Corpus builders behind `simgan shards build`: digit and eye simulators, real digits, image folders.

The digits-on-photographs target (`build_photo_digits`) is six corpora made from one simulator
run and the MNIST-5k split; see PHOTO_CORPORA and sim/photos.py for the recipe.

Every out_dir may be a local directory or an object-store prefix (s3://bucket/corpus); shards are
uploaded as they are written, never staged on local disk.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from simgan_dist.data.sim.appearance import apply_appearance
from simgan_dist.data.sim.photos import blend, load_photographs, random_crops
from simgan_dist.data.sim.real_digits import IMAGE_SIZE, real_train_labels, split_real_digits
from simgan_dist.errors import InputError
from simgan_dist.io.location import Location
from simgan_dist.io.progress import with_progress
from simgan_dist.io.shardio import MANIFEST_NAME, Manifest, check_key, write_shards

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

# The digits-on-photographs target, in build order. Training may read only the first two
# (the synthetic arm and its domain-randomized copy, for a refiner or a classifier) and
# real-train (unlabeled: no json); ceiling and real-train-labeled train classifiers for the
# ceiling and oracle rows of `simgan eval`; real-eval is the held-out test set.
PHOTO_SYNTH = "digits-photo-synth"
PHOTO_RANDOMIZED = "digits-photo-synth-randomized"
PHOTO_CEILING = "digits-photo-ceiling"
PHOTO_REAL_TRAIN = "digits-photo-real-train"
PHOTO_REAL_EVAL = "digits-photo-real-eval"
PHOTO_REAL_LABELED = "digits-photo-real-train-labeled"
PHOTO_CORPORA = (
    PHOTO_SYNTH, PHOTO_RANDOMIZED, PHOTO_CEILING, PHOTO_REAL_TRAIN, PHOTO_REAL_EVAL,
    PHOTO_REAL_LABELED,
)  # fmt: skip
# Photo crops come from default_rng([seed, CROP_STREAM, k]); the simulator uses streams 0-2.
CROP_STREAM = 3
_CROPS_CEILING, _CROPS_REAL_TRAIN, _CROPS_REAL_EVAL = 0, 1, 2


def build_synthetic_digits(
    out_dir: Location | str | Path,
    num_samples: int,
    samples_per_shard: int,
    seed: int,
    appearance: str = "gray",
) -> Manifest:
    """num_samples simulated 28x28 digits; each json holds 'label' and the render parameters.
    appearance: gray (uint8 28x28), clean or randomized (RGB; see sim/appearance.py)."""
    from simgan_dist.data.sim.digits import (
        DigitSimulator,  # fonts and matplotlib: load only when used
    )

    sim = DigitSimulator(seed, appearance)
    samples = sim.sample(num_samples)
    return _write_keyed(samples, num_samples, out_dir, "synth", samples_per_shard)


def build_synthetic_eyes(
    out_dir: Location | str | Path,
    num_samples: int,
    samples_per_shard: int,
    seed: int,
) -> Manifest:
    """num_samples simulated 35x55 eye images; each json holds 'gaze' and the render parameters."""
    from simgan_dist.data.sim.eyes import EyeSimulator

    sim = EyeSimulator(seed)
    samples = sim.sample(num_samples)
    return _write_keyed(samples, num_samples, out_dir, "synth", samples_per_shard)


def build_real_digits(
    train_dir: Location | str | Path,
    eval_dir: Location | str | Path,
    samples_per_shard: int,
    seed: int = 0,
) -> tuple[Manifest, Manifest]:
    """The bundled MNIST-5k split into two corpora (see sim/real_digits.py for the rules).

    train_dir: the unlabeled real domain, PNG only: the shards hold no json, so no label can
    reach training. eval_dir: PNG + json {"label": int}, the held-out test set for the S+U
    protocol; nothing may train on it.
    """
    train_images, eval_images, eval_labels = split_real_digits(seed)
    train = _write_unlabeled(train_images, train_dir, "real", samples_per_shard)
    evaluation = _write_labeled(eval_images, eval_labels, eval_dir, "real-eval", samples_per_shard)
    return train, evaluation


def _write_keyed(
    items: Iterable[tuple[np.ndarray, dict | None]],
    count: int,
    out_dir: Location | str | Path,
    prefix: str,
    samples_per_shard: int,
) -> Manifest:
    """(image, json-or-None) items keyed prefix-NNNNNNN in order, in prefix-*.tar shards."""
    name = Location.of(out_dir).name
    keyed = ((f"{prefix}-{i:07d}", img, meta) for i, (img, meta) in enumerate(items))
    samples = with_progress(keyed, count, f"build {name}")
    return write_shards(samples, out_dir, prefix, samples_per_shard, name)


def _write_unlabeled(
    images: Any,
    out_dir: Location | str | Path,
    prefix: str,
    samples_per_shard: int,
) -> Manifest:
    """Real images, PNG only (no json: no label can reach training)."""
    items = ((img, None) for img in images)
    return _write_keyed(items, len(images), out_dir, prefix, samples_per_shard)


def _write_labeled(
    images: Any,
    labels: Any,
    out_dir: Location | str | Path,
    prefix: str,
    samples_per_shard: int,
) -> Manifest:
    """Real digits with json {"label": int}."""
    items = ((img, {"label": int(label)}) for img, label in zip(images, labels, strict=True))
    return _write_keyed(items, len(labels), out_dir, prefix, samples_per_shard)


def _folder_key(rel: Path) -> str:
    # Keys may not hold "/" (kept flat) or "." (WebDataset splits the extension at the first dot).
    return re.sub(r"[/\\.\s]", "_", rel.with_suffix("").as_posix())


def _load_image(path: Path, grayscale: bool, size: tuple[int, int] | None) -> np.ndarray:
    with Image.open(path) as opened:
        im: Image.Image = opened
        if im.mode in ("I;16", "I;16B", "I"):
            im = im.convert("I;16")  # 16-bit depth stays 16-bit
        elif grayscale:
            im = im.convert("L")
        elif im.mode != "RGB":
            im = im.convert("RGB")
        if size is not None and im.size != (size[1], size[0]):
            # NEAREST for depth: interpolating across an object edge invents depths in between.
            resample = Image.Resampling.NEAREST if im.mode == "I;16" else Image.Resampling.BICUBIC
            im = im.resize((size[1], size[0]), resample)  # PIL wants (width, height)
        return np.array(im)


def _folder_samples(
    folder: Path, paths: list[Path], grayscale: bool, size: tuple[int, int] | None
) -> Iterator[tuple[str, np.ndarray, dict | None]]:
    for path in paths:
        sidecar = path.with_suffix(".json")
        try:
            meta = json.loads(sidecar.read_text()) if sidecar.exists() else None
        except (ValueError, OSError) as err:  # JSONDecodeError and UnicodeDecodeError included
            raise InputError(f"{sidecar}: not a JSON annotation: {err}") from None
        if meta is not None and not isinstance(meta, dict):
            raise InputError(f"{sidecar}: the annotation must be a JSON object")
        try:
            image = _load_image(path, grayscale, size)
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise InputError(f"{path}: not a readable image: {err}") from None
        key = _folder_key(path.relative_to(folder))
        try:
            check_key(key)
        except ValueError as err:
            raise InputError(f"{path}: {err}") from None
        yield key, image, meta


def build_from_folder(
    folder: str | Path,
    out_dir: Location | str | Path,
    samples_per_shard: int,
    grayscale: bool = True,
    size: tuple[int, int] | None = None,
) -> Manifest:
    """Shards from every .png/.jpg under folder (sorted by relative path), for bring-your-own data.

    A sidecar `<stem>.json` next to an image becomes that sample's json (annotations); images
    without one get none. size is (height, width); without it all images must share one size.
    Keys are the relative path without suffix, with "/" and "." replaced by "_".
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a directory")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"{folder}: no {'/'.join(IMAGE_SUFFIXES)} images")
    samples = with_progress(
        _folder_samples(folder, paths, grayscale, size), len(paths), f"build {folder.name}"
    )
    return write_shards(samples, out_dir, "images", samples_per_shard, folder.name)


def build_real_train_labeled(
    out_dir: Location | str | Path,
    samples_per_shard: int,
    seed: int = 0,
) -> Manifest:
    """The real *training* digits again, with their labels: the real-data oracle's training set
    (and a labeled validation split for choosing settings). Same keys and images as
    digits-real-train; nothing that trains a refiner or a discriminator reads this corpus."""
    train_images, _, _ = split_real_digits(seed)
    labels = real_train_labels(seed)
    return _write_labeled(train_images, labels, out_dir, "real", samples_per_shard)


def ensure_digit_shards(
    shards_root: Path, seed: int, num_synthetic: int = 20_000, samples_per_shard: int = 2_000
) -> None:
    """Build the bundled digit corpora once; later demos reuse them."""
    if not (shards_root / "digits-synth" / MANIFEST_NAME).exists():
        build_synthetic_digits(shards_root / "digits-synth", num_synthetic, samples_per_shard, seed)
    if not (shards_root / "digits-real-eval" / MANIFEST_NAME).exists():
        build_real_digits(
            shards_root / "digits-real-train", shards_root / "digits-real-eval", samples_per_shard
        )
    if not (shards_root / "digits-real-train-labeled" / MANIFEST_NAME).exists():
        build_real_train_labeled(shards_root / "digits-real-train-labeled", samples_per_shard)


def _on_photos(digits: np.ndarray, pool: tuple[np.ndarray, ...], seed: int, use: int) -> np.ndarray:
    """Grey digits blended (MNIST-M) on crops from their own stream [seed, CROP_STREAM, use]."""
    rng = np.random.default_rng([seed, CROP_STREAM, use])
    return blend(digits, random_crops(pool, len(digits), IMAGE_SIZE, rng))


def build_photo_digits(
    shards_root: Location | str | Path,
    seed: int = 0,
    num_synthetic: int = 20_000,
    samples_per_shard: int = 2_000,
    corpora: Collection[str] = PHOTO_CORPORA,
    real_seed: int = 0,
) -> list[Manifest]:
    """The digits-on-photographs target under shards_root (local or a bucket prefix): the
    corpora named (all of PHOTO_CORPORA by default), in that order.

    seed drives the simulator and the ceiling's crops; real_seed the MNIST-5k split and the real
    images' crops (0, as for the grey digits, so every simulator seed meets the same target).
    """
    unknown = sorted(set(corpora) - set(PHOTO_CORPORA))
    if unknown:
        raise InputError(f"unknown digits-photo corpora {unknown}; known: {list(PHOTO_CORPORA)}")
    pool = load_photographs()  # first: a missing photograph stops the build before any write
    root, spp = Location.of(shards_root), samples_per_shard
    synthetic = _build_photo_synthetic(root, seed, num_synthetic, pool, corpora, spp)
    return synthetic + _build_photo_real(root, real_seed, pool, corpora, spp)


def _build_photo_synthetic(
    root: Location,
    seed: int,
    num: int,
    pool: tuple[np.ndarray, ...],
    corpora: Collection[str],
    samples_per_shard: int,
) -> list[Manifest]:
    """synth (clean), synth-randomized and ceiling: one grey render per key, coloured three ways,
    so the three share keys, labels and stroke geometry."""
    wanted = [c for c in (PHOTO_SYNTH, PHOTO_RANDOMIZED, PHOTO_CEILING) if c in corpora]
    if not wanted:
        return []
    from simgan_dist.data.sim.digits import DigitSimulator  # fonts and matplotlib: only when used

    # Rendering is most of the cost (~0.4 ms a digit): render once and keep the grey digits
    # (0.8 KB each) rather than run the simulator once per appearance. apply_appearance is what
    # DigitSimulator(seed, mode) applies, so each corpus equals that simulator's output.
    rendered = list(with_progress(DigitSimulator(seed).sample(num), num, "render digits-photo"))
    manifests = []
    for name in wanted:
        pairs: Iterable[tuple[np.ndarray, dict]]
        if name == PHOTO_CEILING:
            # The appearance ceiling: the target's own recipe and photographs on our digits.
            grays = np.stack([gray for gray, _ in rendered])
            images = _on_photos(grays, pool, seed, _CROPS_CEILING)
            pairs = (
                (img, {**params, "appearance": "ceiling"})
                for img, (_, params) in zip(images, rendered, strict=True)
            )
        else:
            mode = "clean" if name == PHOTO_SYNTH else "randomized"
            pairs = (
                apply_appearance(gray, params, mode, seed, i)
                for i, (gray, params) in enumerate(rendered)
            )
        out = root.join(name)
        manifests.append(_write_keyed(pairs, num, out, "synth", samples_per_shard))
    return manifests


def _build_photo_real(
    root: Location,
    real_seed: int,
    pool: tuple[np.ndarray, ...],
    corpora: Collection[str],
    samples_per_shard: int,
) -> list[Manifest]:
    """real-train (no json), real-eval and real-train-labeled: the MNIST-5k split on photo crops.

    As in MNIST-M, train and eval share the pool of seven photographs: the eval images are other
    digits on other crops (a separate seeded stream) of the same photographs. real-train-labeled
    holds real-train's images and keys with labels: the oracle's training set and the validation
    split; nothing that trains a refiner or a discriminator reads it.
    """
    train, eval_images, eval_labels = split_real_digits(real_seed)
    train_rgb = _on_photos(train, pool, real_seed, _CROPS_REAL_TRAIN)  # ~20 ms each: always
    eval_rgb = _on_photos(eval_images, pool, real_seed, _CROPS_REAL_EVAL)
    spp = samples_per_shard
    writers: dict[str, Callable[[Location], Manifest]] = {
        PHOTO_REAL_TRAIN: lambda out: _write_unlabeled(train_rgb, out, "real", spp),
        PHOTO_REAL_EVAL: lambda out: _write_labeled(eval_rgb, eval_labels, out, "real-eval", spp),
        PHOTO_REAL_LABELED: lambda out: _write_labeled(
            train_rgb, real_train_labels(real_seed), out, "real", spp
        ),
    }
    return [write(root.join(name)) for name, write in writers.items() if name in corpora]


def ensure_photo_digit_shards(
    shards_root: str | Path, seed: int, num_synthetic: int = 20_000, samples_per_shard: int = 2_000
) -> None:
    """Build whichever digits-on-photographs corpora lack a manifest; later demos reuse them."""
    root = Location.of(shards_root)
    missing = [c for c in PHOTO_CORPORA if not root.join(c, MANIFEST_NAME).exists()]
    if missing:
        build_photo_digits(root, seed, num_synthetic, samples_per_shard, corpora=missing)
