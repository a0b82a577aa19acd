"""Corpus builders behind `simgan shards build`: digit and eye simulators, real digits, image folders.

Every out_dir may be a local directory or an object-store prefix (s3://bucket/corpus); shards are
uploaded as they are written, never staged on local disk.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from simgan_dist.data.sim.real_digits import real_train_labels, split_real_digits
from simgan_dist.io import urls
from simgan_dist.io.progress import with_progress
from simgan_dist.io.shardio import MANIFEST_NAME, Manifest, check_key, write_shards

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def build_synthetic_digits(
    out_dir: str | Path,
    num_samples: int,
    samples_per_shard: int,
    seed: int,
    storage_options: dict[str, Any] | None = None,
) -> Manifest:
    """num_samples simulated 28x28 digits; each json holds 'label' and the render parameters."""
    from simgan_dist.data.sim.digits import (
        DigitSimulator,  # fonts and matplotlib: load only when used
    )

    sim = DigitSimulator(seed)
    return _write_simulated(sim, out_dir, num_samples, samples_per_shard, storage_options)


def build_synthetic_eyes(
    out_dir: str | Path,
    num_samples: int,
    samples_per_shard: int,
    seed: int,
    storage_options: dict[str, Any] | None = None,
) -> Manifest:
    """num_samples simulated 35x55 eye images; each json holds 'gaze' and the render parameters."""
    from simgan_dist.data.sim.eyes import EyeSimulator

    sim = EyeSimulator(seed)
    return _write_simulated(sim, out_dir, num_samples, samples_per_shard, storage_options)


def _write_simulated(
    sim: Any,
    out_dir: str | Path,
    num_samples: int,
    samples_per_shard: int,
    storage_options: dict[str, Any] | None,
) -> Manifest:
    """A simulator's (image, params) samples as synth-NNNNNNN keys in synth-*.tar shards."""
    simulated = (
        (f"synth-{i:07d}", img, params) for i, (img, params) in enumerate(sim.sample(num_samples))
    )
    name = urls.basename(str(out_dir))
    samples = with_progress(simulated, num_samples, f"build {name}")
    return write_shards(samples, out_dir, "synth", samples_per_shard, name, storage_options)


def build_real_digits(
    train_dir: str | Path,
    eval_dir: str | Path,
    samples_per_shard: int,
    seed: int = 0,
    storage_options: dict[str, Any] | None = None,
) -> tuple[Manifest, Manifest]:
    """The bundled MNIST-5k split into two corpora (see sim/real_digits.py for the rules).

    train_dir: the unlabeled real domain, PNG only: the shards hold no json, so no label can
    reach training. eval_dir: PNG + json {"label": int}, the held-out test set for the S+U
    protocol; nothing may train on it.
    """
    train_images, eval_images, eval_labels = split_real_digits(seed)
    name = urls.basename(str(train_dir))
    samples = ((f"real-{i:07d}", img, None) for i, img in enumerate(train_images))
    train = write_shards(
        with_progress(samples, len(train_images), f"build {name}"),
        train_dir,
        "real",
        samples_per_shard,
        name,
        storage_options,
    )
    evaluation = _write_labeled(
        eval_images, eval_labels, eval_dir, "real-eval", samples_per_shard, storage_options
    )
    return train, evaluation


def _write_labeled(
    images: Any,
    labels: Any,
    out_dir: str | Path,
    prefix: str,
    samples_per_shard: int,
    storage_options: dict[str, Any] | None,
) -> Manifest:
    """Real digits with json {"label": int}, keyed prefix-NNNNNNN in order."""
    name = urls.basename(str(out_dir))
    labeled = (
        (f"{prefix}-{i:07d}", img, {"label": int(label)})
        for i, (img, label) in enumerate(zip(images, labels, strict=True))
    )
    samples = with_progress(labeled, len(labels), f"build {name}")
    return write_shards(samples, out_dir, prefix, samples_per_shard, name, storage_options)


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
            raise ValueError(f"{sidecar}: not a JSON annotation: {err}") from None
        if meta is not None and not isinstance(meta, dict):
            raise ValueError(f"{sidecar}: the annotation must be a JSON object")
        try:
            image = _load_image(path, grayscale, size)
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise ValueError(f"{path}: not a readable image: {err}") from None
        key = _folder_key(path.relative_to(folder))
        try:
            check_key(key)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
        yield key, image, meta


def build_from_folder(
    folder: str | Path,
    out_dir: str | Path,
    samples_per_shard: int,
    grayscale: bool = True,
    size: tuple[int, int] | None = None,
    storage_options: dict[str, Any] | None = None,
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
    return write_shards(samples, out_dir, "images", samples_per_shard, folder.name, storage_options)


def build_real_train_labeled(
    out_dir: str | Path,
    samples_per_shard: int,
    seed: int = 0,
    storage_options: dict[str, Any] | None = None,
) -> Manifest:
    """The real *training* digits again, with their labels: the real-data oracle's training set
    (and a labeled validation split for choosing settings). Same keys and images as
    digits-real-train; nothing that trains a refiner or a discriminator reads this corpus."""
    train_images, _, _ = split_real_digits(seed)
    labels = real_train_labels(seed)
    return _write_labeled(train_images, labels, out_dir, "real", samples_per_shard, storage_options)


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
