"""WebDataset shards -> infinite, per-rank torch batch streams (pipeline.py), finite ordered readers."""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from simgan_dist.data.catalog import EpochPlan
from simgan_dist.data.pipeline import (
    BadSampleError,
    BatchStream,
    PipelineSpec,
    StreamStats,
    _Skip,
    raw_samples,
)
from simgan_dist.io.sample_fields import decode_annotations, decode_image, has_annotation
from simgan_dist.io.shardio import check_key, image_chw, resolve_shard_urls

log = logging.getLogger(__name__)

BAD_SAMPLE_CHOICES = ("skip", "stop")


def _decode(
    raw: dict[str, Any],
    image_shape: tuple[int, ...] | None,
    with_meta: bool,
    require_json: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    check_key(raw["__key__"])  # refine writes it back as a member name: never '..' or '/...'
    if require_json and not has_annotation(raw):
        raise ValueError("no json annotation in sample (nor a cls label)")
    img = decode_image(raw)
    if image_shape is not None and image_chw(img) != tuple(image_shape):
        raise ValueError(f"image shape {image_chw(img)} is not {tuple(image_shape)}")
    meta = decode_annotations(raw) if with_meta else {}
    meta["__key__"], meta["__url__"] = raw["__key__"], raw["__url__"]
    return img, meta


def _shard_items(
    url: str, decode: Any, storage_options: dict[str, Any] | None = None
) -> Iterator[Any]:
    """Decoded samples of one shard in order; _Skip for bad ones. A damaged tar ends the shard
    with one _Skip naming the last good key, so the samples before the damage are still used."""
    for item in raw_samples(url, storage_options=storage_options):
        if isinstance(item, _Skip):
            yield item
            continue
        try:
            yield decode(item[1])
        except Exception as err:  # PIL, json and shape errors all mean "bad sample"
            yield _Skip(url, item[1]["__key__"], f"{type(err).__name__}: {err}")


def batch_stream(
    shards: list[str] | EpochPlan,
    batch_size: int,
    image_shape: tuple[int, int, int],
    *,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    shuffle_buffer: int = 1000,
    num_loader_workers: int = 0,
    on_bad_sample: str = "skip",
    with_meta: bool = True,
    stats: StreamStats | None = None,
    storage_options: dict[str, Any] | None = None,
    on_shard_end: Callable[[int, str], None] | None = None,
    require_json: bool = False,
    pin_memory: bool = False,
) -> BatchStream:
    """Endless (images (N,C,H,W) float in [-1,1], metas) batches for one data-parallel rank.

    shards is a list of URLs or a shard catalog's EpochPlan (catalog.py), which says what each
    rank reads in each epoch; the split is explicit, so RANK/WORLD_SIZE in the environment do not
    matter. Each meta is the sample's json ({} when it has none, or when with_meta is False) plus
    "__key__", "__url__" and "__epoch__". on_shard_end(epoch, url) is called in this process for
    each shard a loader has read to its end. Deterministic for a seed, also with loader
    workers (the DataLoader returns their batches round-robin). Bad samples (damaged or unreadable tar,
    undecodable PNG, wrong image shape, no json when require_json) are skipped (logged
    and counted in stats) or, with on_bad_sample="stop", raise BadSampleError naming url and key.
    pin_memory (for a CUDA consumer) returns images in pinned host memory: pinned by the
    DataLoader's pin thread ahead of use, or here without loader processes.
    """
    if isinstance(shards, str) or not shards:
        raise ValueError(f"batch_stream: need a non-empty list of shard URLs, got {shards!r}")
    if on_bad_sample not in BAD_SAMPLE_CHOICES:
        raise ValueError(
            f"on_bad_sample must be one of {BAD_SAMPLE_CHOICES}, got {on_bad_sample!r}"
        )
    if batch_size < 1 or shuffle_buffer < 1 or num_loader_workers < 0:
        raise ValueError("batch_size and shuffle_buffer must be >= 1, num_loader_workers >= 0")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    stats = stats if stats is not None else StreamStats()
    decode = functools.partial(
        _decode, image_shape=tuple(image_shape), with_meta=with_meta, require_json=require_json
    )
    if isinstance(shards, EpochPlan):
        if shards.world_size != world_size:
            raise ValueError(f"plan is for {shards.world_size} ranks, stream for {world_size}")
        plan = shards
    else:
        plan = EpochPlan(tuple(shards), (1,) * len(shards), seed, world_size)
    spec = PipelineSpec(plan, rank, decode, batch_size, shuffle_buffer, seed,
                        on_bad_sample == "stop", storage_options)  # fmt: skip
    return BatchStream(spec, num_loader_workers, stats, on_shard_end, pin_memory)


def read_samples(
    urls: list[str],
    on_bad_sample: str = "skip",
    stats: StreamStats | None = None,
    *,
    image_shape: tuple[int, int, int] | None = None,
    storage_options: dict[str, Any] | None = None,
    require_json: bool = False,
) -> Iterator[tuple[str, np.ndarray, dict, str]]:
    """Every sample of every shard, in order, once: (key, image array, json dict or {}, url).

    For refinement and evaluation. Bad samples are skipped or raise as in batch_stream; with
    image_shape set, images of another (C,H,W) count as bad; with require_json, samples without
    a json annotation do.
    """
    if on_bad_sample not in BAD_SAMPLE_CHOICES:
        raise ValueError(
            f"on_bad_sample must be one of {BAD_SAMPLE_CHOICES}, got {on_bad_sample!r}"
        )
    stats = stats if stats is not None else StreamStats()
    decode = functools.partial(
        _decode, image_shape=image_shape, with_meta=True, require_json=require_json
    )
    for url in urls:
        for item in _shard_items(url, decode, storage_options=storage_options):
            if isinstance(item, _Skip):
                if on_bad_sample == "stop":
                    raise BadSampleError(f"bad sample {item.describe()}")
                log.warning("skipping bad sample %s", item.describe())
                stats.record_skip(item.describe())
                if item.shard_failure:
                    stats.shard_failures[item.url] = f"{item.shard_failure}: {item.describe()}"
                continue
            img, meta = item
            key, url_ = meta.pop("__key__"), meta.pop("__url__")
            stats.num_samples += 1
            yield key, img, meta, url_


def load_arrays(
    location: str,
    *,
    allow_pipe: bool = False,
    on_bad_sample: str = "skip",
    limit: int | None = None,
    stats: StreamStats | None = None,
    storage_options: dict[str, Any] | None = None,
) -> tuple[np.ndarray, list[dict]]:
    """All images of a (small) corpus stacked as uint8/uint16 (N,H,W[,C]), and their metas
    (json plus "__key__" and "__url__"), in shard order; at most limit samples."""
    images, metas = [], []
    shard_urls = resolve_shard_urls(location, allow_pipe, storage_options)
    samples = read_samples(shard_urls, on_bad_sample, stats, storage_options=storage_options)
    for key, img, meta, url in itertools.islice(samples, limit):
        images.append(img)
        metas.append({**meta, "__key__": key, "__url__": url})
    if not images:
        raise ValueError(f"{location}: no usable samples")
    return np.stack(images), metas
