"""A training worker's data: its synthetic and real batch streams, and fixed images for grids."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from simgan_dist.config import Config
from simgan_dist.data.catalog import ShardSource, data_location, stream_seed
from simgan_dist.data.pipeline import BatchStream
from simgan_dist.data.reader import StreamStats, batch_stream, read_samples
from simgan_dist.io.shardio import resolve_shard_urls
from simgan_dist.model.pixels import to_batch

NUM_GRID_IMAGES = 16


class HostToDevice:
    """Moves batches to the training device. On CUDA, from pinned host memory on a copy stream
    of its own: the host has queued the previous step's kernels and moved on, so the copy runs
    while the GPU still works through them, and the compute stream waits for it only where the
    batch is used. A copy from pageable memory would be staged by the host, synchronously,
    whatever non_blocking says. On CPU the batch is returned as it is."""

    def __init__(self, device: torch.device, pin_memory: bool = True) -> None:
        self.device = device
        self.pin_memory = pin_memory and device.type == "cuda"
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if self.stream is None:
            return batch.to(self.device)
        if self.pin_memory and not batch.is_pinned():
            batch = batch.pin_memory()  # the loaders' pin thread usually did this already
        compute = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self.stream):
            moved = batch.to(self.device, non_blocking=True)
        compute.wait_stream(self.stream)
        moved.record_stream(compute)  # freed only once compute is done with it
        return moved


@dataclass
class StreamBatchSource:
    """BatchSource from two iterators of (images, metas) pairs, as data.batch_stream yields them.
    Counts what it drew, so a resumed run can skip to the same position (its state_dict).
    positioned: the corpora's BatchStreams (under any wrapper), whose positions resume without
    replay; without them a resume replays the streams."""

    synthetic: Iterator[tuple[torch.Tensor, list[dict]]]
    real: Iterator[tuple[torch.Tensor, list[dict]]]
    device: torch.device = torch.device("cpu")
    num_synthetic: int = 0  # batches drawn so far
    num_real: int = 0
    pin_memory: bool = True  # on CUDA (HostToDevice)
    positioned: dict[str, BatchStream] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.to_device = HostToDevice(self.device, self.pin_memory)

    def next_synthetic(self) -> torch.Tensor:
        self.num_synthetic += 1
        return self.to_device(next(self.synthetic)[0])

    def next_real(self) -> torch.Tensor:
        self.num_real += 1
        return self.to_device(next(self.real)[0])

    def state_dict(self) -> dict[str, Any]:
        """The position: batches drawn from each stream, and where each stream's readers are."""
        state: dict[str, Any] = {"num_synthetic": self.num_synthetic, "num_real": self.num_real}
        state.update({f"{c}_position": s.position() for c, s in self.positioned.items()})
        return state

    def load_state_dict(self, position: dict[str, Any]) -> None:
        """Skip to a saved position of streams rebuilt with the same seeds: by seeking each
        stream to its readers' cursors (pipeline.py: finished shards are not opened, trained
        samples not decoded), or, for a checkpoint without them, by replaying the streams (one
        decode per skipped sample)."""
        keys = [f"{c}_position" for c in self.positioned]
        fresh = self.num_synthetic == self.num_real == 0
        if self.positioned and fresh and all(k in position for k in keys):
            for corpus, stream in self.positioned.items():
                stream.seek(position[f"{corpus}_position"])
        else:
            for _ in range(position["num_synthetic"] - self.num_synthetic):
                next(self.synthetic)
            for _ in range(position["num_real"] - self.num_real):
                next(self.real)
        self.num_synthetic, self.num_real = position["num_synthetic"], position["num_real"]


def image_shape(cfg: Config) -> tuple[int, int, int]:
    return (cfg.model.image_channels, cfg.model.image_height, cfg.model.image_width)


def make_batch_source(
    cfg: Config,
    rank: int,
    world_size: int,
    stats: StreamStats,
    device: torch.device,
    catalogs: Mapping[str, ShardSource],
) -> StreamBatchSource:
    """Endless synthetic and real streams for this rank, dealt by the corpora's shard catalogs
    and seeded by run.seed alone: a resumed run rebuilds them and seeks them to its saved
    position (load_state_dict). A synthetic sample without its json annotation counts as bad: its refined copy
    could not keep the label."""
    # Micro-batches: with gradient accumulation each optimizer step takes grad_accum_steps.
    batch = cfg.schedule.batch_size // cfg.engine.grad_accum_steps // world_size
    pin = cfg.data.pin_memory and device.type == "cuda"

    positioned: dict[str, BatchStream] = {}

    def stream(corpus: str) -> Any:
        catalog = catalogs[corpus]

        def on_end(epoch: int, url: str) -> None:
            catalog.record_finished(epoch, rank, url)

        positioned[corpus] = it = batch_stream(
            catalog.plan(), batch, image_shape(cfg), seed=stream_seed(cfg, corpus),
            rank=rank, world_size=world_size, shuffle_window=cfg.data.shuffle_window,
            num_loader_workers=cfg.data.num_loader_workers, on_bad_sample=cfg.data.on_bad_sample,
            with_meta=False, stats=stats, store=data_location(cfg, getattr(cfg.data, corpus)),
            on_shard_end=on_end, require_json=corpus == "synthetic", pin_memory=pin,
        )  # fmt: skip
        return it

    return StreamBatchSource(
        stream("synthetic"), stream("real"), device, pin_memory=pin, positioned=positioned
    )


class KeyLog:
    """Passes batches through and appends {"batch": n, "keys": [...], "epochs": [...]} per batch
    to a JSONL file, n counting on from start (the stream's position when it is wrapped).

    Wrapped after a resume's fast-forward, so only batches that train are logged. A resumed
    run logs from its checkpoint's position again: a line whose n is not above the previous
    line's marks a rewind, and the lines it supersedes are those with n at or above it. What is
    left is exactly what the final weights were trained on (audits exactly-once per epoch)."""

    def __init__(self, stream: Any, path: Path, start: int = 0) -> None:
        self.stream, self.path, self.num_batches = stream, path, start
        path.parent.mkdir(parents=True, exist_ok=True)

    def __iter__(self) -> KeyLog:
        return self

    def __next__(self) -> tuple[torch.Tensor, list[dict]]:
        images, metas = next(self.stream)
        self.num_batches += 1
        line = {
            "batch": self.num_batches,
            "keys": [m["__key__"] for m in metas],
            "epochs": [m["__epoch__"] for m in metas],
        }
        with open(self.path, "a") as f:
            f.write(json.dumps(line) + "\n")
        return images, metas


def grid_images(location: str, cfg: Config) -> torch.Tensor:
    """The first NUM_GRID_IMAGES good samples of a corpus as a batch in [-1, 1]. Read apart from
    the training streams, so grids compare the same images and the data position stays put."""
    corpus = data_location(cfg, location)
    urls = resolve_shard_urls(corpus, cfg.data.allow_pipe_urls)
    samples = read_samples(urls, "skip", image_shape=image_shape(cfg), store=corpus)
    return to_batch([image for _, image, _, _ in itertools.islice(samples, NUM_GRID_IMAGES)])
