"""Offline refinement: one refined shard per input shard, same keys and annotations, plus lineage.

This first version runs in one process; each output shard is published only when complete
(temporary name, then rename), and a rerun skips shards already published, so an interrupted
run resumes without redoing or dropping work.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simgan_dist.checkpoint import NETWORKS_FILE, load_refiner
from simgan_dist.data import StreamStats, read_samples, to_tensor, to_uint8
from simgan_dist.shardio import (
    Manifest,
    ShardInfo,
    read_manifest,
    resolve_shard_urls,
    write_manifest,
    write_shard,
)

log = logging.getLogger(__name__)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def config_hash(section: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(section, sort_keys=True).encode()).hexdigest()[:16]


class ShardRefiner:
    """Refines the samples of one shard in batches; images stay uint8 on disk."""

    def __init__(self, checkpoint: str | Path, batch_size: int, device: str = "cpu") -> None:
        self.refiner, self.cfg, self.checkpoint_dir = load_refiner(checkpoint, device)
        self.batch_size, self.device = batch_size, device
        self.lineage_base = {
            "checkpoint_id": self.checkpoint_dir.name,
            "checkpoint_sha256": file_sha256(self.checkpoint_dir / NETWORKS_FILE),
            "refiner_config_hash": config_hash(
                {"model": self.cfg.to_dict()["model"], "loss": self.cfg.to_dict()["loss"]}
            ),
        }

    @torch.no_grad()
    def refine_arrays(self, images: list[np.ndarray]) -> np.ndarray:
        batch = torch.stack([to_tensor(img) for img in images]).to(self.device)
        return to_uint8(self.refiner(batch).cpu())

    def refine_shard(
        self, url: str, on_bad_sample: str, stats: StreamStats
    ) -> Iterator[tuple[str, np.ndarray, dict]]:
        pending: list[tuple[str, np.ndarray, dict]] = []
        for key, image, meta, _ in read_samples([url], on_bad_sample=on_bad_sample, stats=stats):
            pending.append((key, image, meta))
            if len(pending) == self.batch_size:
                yield from self._flush(url, pending)
                pending = []
        if pending:
            yield from self._flush(url, pending)

    def _flush(self, url: str, pending: list) -> Iterator[tuple[str, np.ndarray, dict]]:
        refined = self.refine_arrays([image for _, image, _ in pending])
        for (key, _, meta), out in zip(pending, refined, strict=True):
            annotations = {k: v for k, v in meta.items() if not k.startswith("__")}
            annotations["lineage"] = {"source_shard": url, **self.lineage_base}
            yield key, out, annotations


def refine_shards(
    checkpoint: str | Path,
    input_location: str,
    output_dir: str | Path,
    batch_size: int = 256,
    on_bad_sample: str = "skip",
    device: str = "cpu",
) -> dict[str, Any]:
    """Refine every input shard into output_dir/<same name>; returns a summary dict."""
    started = time.perf_counter()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    urls = resolve_shard_urls(input_location)
    refiner = ShardRefiner(checkpoint, batch_size, device)
    shards: list[ShardInfo] = []
    stats = StreamStats()
    num_done_before = 0
    for url in urls:
        target = output_dir / Path(url).name
        if target.exists():  # published by an earlier run: complete by construction
            shards.append(_published_info(output_dir, target))
            num_done_before += 1
            continue
        info = write_shard(target, refiner.refine_shard(url, on_bad_sample, stats))
        shards.append(info)
        log.info("refined %s: %d samples", url, info.num_samples)
    shape = (
        refiner.cfg.model.image_channels,
        refiner.cfg.model.image_height,
        refiner.cfg.model.image_width,
    )
    manifest = Manifest(output_dir.name, tuple(shards), shape, has_labels=True)
    write_manifest(output_dir, manifest)
    wall_s = time.perf_counter() - started
    num_images = manifest.num_samples
    return {
        "output": str(output_dir),
        "num_images": num_images,
        "num_shards": len(shards),
        "num_shards_skipped_already_done": num_done_before,
        "num_skipped_samples": stats.num_skipped,
        "skipped": stats.skipped,
        "wall_s": round(wall_s, 2),
        "images_per_s": round(num_images / wall_s, 1) if wall_s > 0 else None,
        "checkpoint": str(refiner.checkpoint_dir),
    }


def _published_info(output_dir: Path, target: Path) -> ShardInfo:
    """The manifest entry of a shard an earlier run published (re-hashed if not in a manifest)."""
    try:
        for info in read_manifest(output_dir).shards:
            if info.name == target.name:
                return info
    except (FileNotFoundError, ValueError):
        pass
    num_samples = sum(1 for _ in read_samples([str(target)]))
    return ShardInfo(target.name, num_samples, file_sha256(target), target.stat().st_size)
