"""A training worker's data: its synthetic and real batch streams, and fixed images for grids."""

from __future__ import annotations

import itertools
from typing import Any

import torch

from simgan_dist.config import Config
from simgan_dist.data import StreamStats, batch_stream, read_samples, to_tensor
from simgan_dist.shardio import resolve_shard_urls
from simgan_dist.train_loop import IteratorBatches

NUM_GRID_IMAGES = 16


def image_shape(cfg: Config) -> tuple[int, int, int]:
    return (cfg.model.image_channels, cfg.model.image_height, cfg.model.image_width)


class RowSlices:
    """data.rank_split == "batch_rows": every rank reads the same global batch and keeps its rows.
    Costs world_size x the decoding, but the run is then identical for any number of workers."""

    def __init__(self, stream: Any, rank: int, world_size: int) -> None:
        self.stream, self.rank, self.world_size = stream, rank, world_size

    def __iter__(self) -> RowSlices:
        return self

    def __next__(self) -> tuple[torch.Tensor, list[dict]]:
        images, metas = next(self.stream)
        size = len(images) // self.world_size
        lo, hi = self.rank * size, (self.rank + 1) * size
        return images[lo:hi], metas[lo:hi]


def make_batches(
    cfg: Config, rank: int, world_size: int, stats: StreamStats, device: torch.device
) -> IteratorBatches:
    """Endless synthetic and real streams for this rank, seeded by run.seed alone: a resumed run
    rebuilds them and fast-forwards to its saved position."""
    seed = cfg.run.seed * 1_000_003
    by_rows = cfg.data.rank_split == "batch_rows"
    stream_rank, stream_world = (0, 1) if by_rows else (rank, world_size)
    # Micro-batches: with gradient accumulation each optimizer step takes grad_accum_steps.
    global_micro = cfg.schedule.batch_size // cfg.engine.grad_accum_steps
    batch = global_micro if by_rows else global_micro // world_size

    def stream(location: str, offset: int) -> Any:
        urls = resolve_shard_urls(location, cfg.data.allow_pipe_urls, cfg.data.storage_options)
        it = batch_stream(
            urls, batch, image_shape(cfg), seed=seed + offset, rank=stream_rank,
            world_size=stream_world, shuffle_buffer=cfg.data.shuffle_buffer,
            num_loader_workers=cfg.data.num_loader_workers, on_bad_sample=cfg.data.on_bad_sample,
            with_meta=False, stats=stats, storage_options=cfg.data.storage_options,
        )  # fmt: skip
        return RowSlices(it, rank, world_size) if by_rows else it

    return IteratorBatches(stream(cfg.data.synthetic, 0), stream(cfg.data.real, 1), device)


def grid_images(location: str, cfg: Config) -> torch.Tensor:
    """The first NUM_GRID_IMAGES good samples of a corpus as a batch in [-1, 1]. Read apart from
    the training streams, so grids compare the same images and the data position stays put."""
    urls = resolve_shard_urls(location, cfg.data.allow_pipe_urls, cfg.data.storage_options)
    samples = read_samples(
        urls, "skip", image_shape=image_shape(cfg), storage_options=cfg.data.storage_options
    )
    return torch.stack(
        [to_tensor(image) for _, image, _, _ in itertools.islice(samples, NUM_GRID_IMAGES)]
    )
