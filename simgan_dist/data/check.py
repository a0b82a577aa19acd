"""Shard corpora checked and described: `simgan shards verify` and `simgan shards stats`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from simgan_dist.errors import InputError
from simgan_dist.io.location import Location
from simgan_dist.io.progress import progress_bar
from simgan_dist.io.sample_fields import decode_annotations, decode_image, has_annotation
from simgan_dist.io.shardio import (
    MANIFEST_NAME,
    Manifest,
    ShardInfo,
    check_key,
    image_chw,
    iter_tar_stream,
    read_manifest,
)


class _HashingReader:
    """Read-through wrapper: the shard is hashed while it is parsed, so it is read once."""

    def __init__(self, f: Any) -> None:
        self.f, self.sha, self.num_bytes = f, hashlib.sha256(), 0

    def read(self, size: int = -1) -> bytes:
        data = self.f.read(size)
        self.sha.update(data)
        self.num_bytes += len(data)
        return data


def _base(location: Location) -> Location:
    return location.parent if location.name == MANIFEST_NAME else location


def _check_sample(
    sample: dict[str, Any], manifest: Manifest, seen: set[str]
) -> tuple[np.ndarray, dict[str, Any] | None]:
    """The checks the readers make (training and refine skip or stop on what fails here);
    the decoded image and annotations (None when the sample has none)."""
    check_key(sample["__key__"])
    if sample["__key__"] in seen:
        raise InputError(f"duplicate key {sample['__key__']!r} (keys name refined copies)")
    seen.add(sample["__key__"])
    img = decode_image(sample, manifest.image_shape)  # its header's size first: no huge decode
    shape = image_chw(img)
    if shape != manifest.image_shape:
        raise InputError(f"shape {shape}, manifest says {manifest.image_shape}")
    if manifest.has_labels and not has_annotation(sample):
        raise InputError("no json annotation (nor a cls label)")
    # A json that is not an object or a cls that is not a number fails here.
    return img, decode_annotations(sample) if has_annotation(sample) else None


def verify_shards(where: Location | str) -> list[str]:
    """Check every shard of a manifest: size, sha256, sample count, and that each PNG decodes
    to the manifest's image shape. Returns the problems found; an empty list means all is well."""
    location = Location.of(where)
    manifest = read_manifest(location)
    base = _base(location)
    problems: list[str] = []
    seen: set[str] = set()  # keys over the whole corpus: ~100 bytes each
    with progress_bar(manifest.num_samples, f"verify {manifest.name}") as bar:
        for info in manifest.shards:
            problems.extend(_verify_shard(base.join(info.name), info, manifest, seen, bar))
    return problems


def _verify_shard(
    shard: Location, info: ShardInfo, manifest: Manifest, seen: set[str], bar: tqdm
) -> list[str]:
    """One shard's problems; the bar advances per sample read."""
    problems: list[str] = []
    url = shard.url
    try:
        stream = shard.open("rb")
    except FileNotFoundError:
        bar.update(info.num_samples)
        return [f"{info.name}: missing"]
    hashed, count = _HashingReader(stream), 0
    try:
        for sample in iter_tar_stream(hashed, url):
            count += 1
            bar.update(1)
            try:
                _check_sample(sample, manifest, seen)
            except Exception as err:  # every bad sample is reported, not raised
                problems.append(f"{info.name}: sample {sample['__key__']}: {err!r}")
    except Exception as err:
        problems.append(f"{info.name}: unreadable after {count} samples: {err!r}")
    finally:
        stream.close()
    if hashed.num_bytes != info.num_bytes or hashed.sha.hexdigest() != info.sha256:
        problems.append(
            f"{info.name}: checksum mismatch ({hashed.num_bytes} bytes, manifest says "
            f"{info.num_bytes}; sha256 differs)"
        )
    if count != info.num_samples:
        problems.append(f"{info.name}: {count} samples, manifest says {info.num_samples}")
    return problems


@dataclass
class CorpusStats:
    """Counts, sizes and pixel statistics of a corpus, accumulated in one pass."""

    name: str
    image_shape: tuple[int, int, int]
    num_shards: int = 0
    num_samples: int = 0
    num_bytes: int = 0
    num_bad: int = 0
    pixel_min: float = float("inf")
    pixel_max: float = float("-inf")
    # Per channel, in float64: exact enough for billions of pixels.
    pixel_sum: np.ndarray = field(default_factory=lambda: np.zeros(0))
    pixel_sq_sum: np.ndarray = field(default_factory=lambda: np.zeros(0))
    num_pixels: int = 0
    label_keys: set[str] = field(default_factory=set)
    shard_samples: list[int] = field(default_factory=list)

    def add(self, img: np.ndarray, meta: dict | None) -> None:
        pixels = img.reshape(-1, image_chw(img)[0]).astype(np.float64)
        if self.pixel_sum.size == 0:
            self.pixel_sum = np.zeros(pixels.shape[1])
            self.pixel_sq_sum = np.zeros(pixels.shape[1])
        self.pixel_sum += pixels.sum(axis=0)
        self.pixel_sq_sum += (pixels**2).sum(axis=0)
        self.num_pixels += pixels.shape[0]
        self.pixel_min = min(self.pixel_min, float(pixels.min()))
        self.pixel_max = max(self.pixel_max, float(pixels.max()))
        if meta:
            self.label_keys.update(meta)

    def summary(self) -> dict[str, Any]:
        mean = self.pixel_sum / max(self.num_pixels, 1)
        std = np.sqrt(np.maximum(self.pixel_sq_sum / max(self.num_pixels, 1) - mean**2, 0.0))
        per_shard = self.shard_samples or [0]
        return {
            "name": self.name,
            "image_shape_chw": list(self.image_shape),
            "num_shards": self.num_shards,
            "num_samples": self.num_samples,
            "num_bad_samples": self.num_bad,
            "num_bytes": self.num_bytes,
            "bytes_per_sample": round(self.num_bytes / max(self.num_samples, 1), 1),
            "samples_per_shard_min_max": [min(per_shard), max(per_shard)],
            "pixel_mean": [round(float(v), 3) for v in mean],
            "pixel_std": [round(float(v), 3) for v in std],
            "pixel_min_max": [self.pixel_min, self.pixel_max],
            "label_keys": sorted(self.label_keys),
        }


def shard_stats(where: Location | str) -> dict[str, Any]:
    """Decode every sample of a manifest's corpus and summarise counts, sizes and pixels."""
    location = Location.of(where)
    manifest = read_manifest(location)
    base = _base(location)
    stats = CorpusStats(manifest.name, manifest.image_shape)
    seen: set[str] = set()
    with progress_bar(manifest.num_samples, f"stats {manifest.name}") as bar:
        for info in manifest.shards:
            shard = base.join(info.name)
            num_in_shard = 0
            with shard.open("rb") as stream:
                for sample in iter_tar_stream(stream, shard.url):
                    bar.update(1)
                    try:
                        img, meta = _check_sample(sample, manifest, seen)
                    except Exception:  # counted here; `shards verify` says which and why
                        stats.num_bad += 1
                        continue
                    stats.add(img, meta)
                    num_in_shard += 1
            stats.num_shards += 1
            stats.num_samples += num_in_shard
            stats.num_bytes += info.num_bytes
            stats.shard_samples.append(num_in_shard)
    return stats.summary()
