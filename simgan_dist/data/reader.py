"""WebDataset shards -> infinite, per-rank torch batch streams (pipeline.py), finite ordered readers."""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from simgan_dist.config import BAD_SAMPLE_CHOICES
from simgan_dist.data.catalog import EpochPlan
from simgan_dist.data.pipeline import (
    BadSampleError,
    BatchStream,
    PipelineSpec,
    StreamStats,
    _Skip,
    raw_samples,
)
from simgan_dist.errors import InputError, kind
from simgan_dist.io.location import Location, on_store
from simgan_dist.io.sample_fields import decode_annotations, decode_image, has_annotation
from simgan_dist.io.shardio import check_key, declared_shape, image_chw, resolve_shard_urls
from simgan_dist.model.pixels import to_batch

log = logging.getLogger(__name__)


def _decode(
    raw: dict[str, Any],
    image_shape: tuple[int, ...] | None,
    with_meta: bool,
    require_json: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    check_key(raw["__key__"])  # refine writes it back as a member name: never '..' or '/...'
    if require_json and not has_annotation(raw):
        raise InputError("no json annotation in sample (nor a cls label)")
    img = decode_image(raw, image_shape)  # its header's size first: no huge decode
    if image_shape is not None and image_chw(img) != tuple(image_shape):
        raise InputError(f"image shape {image_chw(img)} is not {tuple(image_shape)}")
    meta = decode_annotations(raw) if with_meta else {}
    meta["__key__"], meta["__url__"] = raw["__key__"], raw["__url__"]
    return img, meta


def _shard_items(shard: Location, decode: Any) -> Iterator[Any]:
    """Decoded samples of one shard in order; _Skip for bad ones. A damaged tar ends the shard
    with one _Skip naming the last good key, so the samples before the damage are still used."""
    for item in raw_samples(shard):
        if isinstance(item, _Skip):
            yield item
            continue
        try:
            yield decode(item[1])
        except Exception as err:  # PIL, json and shape errors all mean "bad sample"
            yield _Skip(shard.url, item[1]["__key__"], f"{kind(err)}: {err}")


def batch_stream(
    shards: list[str] | EpochPlan,
    batch_size: int,
    image_shape: tuple[int, int, int],
    *,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    shuffle_window: int = 1000,
    num_loader_workers: int = 0,
    on_bad_sample: str = "skip",
    with_meta: bool = True,
    stats: StreamStats | None = None,
    store: Location | None = None,
    on_shard_end: Callable[[int, str], None] | None = None,
    require_json: bool = False,
    pin_memory: bool = False,
) -> BatchStream:
    """Endless (images (N,C,H,W) float in [-1,1], metas) batches for one data-parallel rank.

    shards is a list of URLs or a shard catalog's EpochPlan (catalog.py), which says what each
    rank reads in each epoch; the split is explicit, so RANK/WORLD_SIZE in the environment do not
    matter. Each meta is the sample's json ({} when it has none, or when with_meta is False) plus
    "__key__", "__url__" and "__epoch__". store: where the shards are (the corpus location), its
    options reach each shard. on_shard_end(epoch, url) is called in this process for
    each shard a loader has read to its end. Deterministic for a seed, also with loader
    workers (the DataLoader returns their batches round-robin). Bad samples (damaged or unreadable tar,
    undecodable PNG, wrong image shape, no json when require_json) are skipped (logged
    and counted in stats) or, with on_bad_sample="stop", raise BadSampleError naming url and key.
    pin_memory (for a CUDA consumer) returns images in pinned host memory: pinned by the
    DataLoader's pin thread ahead of use, or here without loader processes.
    """
    if isinstance(shards, str) or not shards:
        raise InputError(f"batch_stream: need a non-empty list of shard URLs, got {shards!r}")
    if on_bad_sample not in BAD_SAMPLE_CHOICES:
        raise InputError(
            f"on_bad_sample must be one of {BAD_SAMPLE_CHOICES}, got {on_bad_sample!r}"
        )
    if batch_size < 1 or shuffle_window < 1 or num_loader_workers < 0:
        raise InputError("batch_size and shuffle_window must be >= 1, num_loader_workers >= 0")
    if not 0 <= rank < world_size:
        raise InputError(f"rank {rank} is outside world_size {world_size}")
    stats = stats if stats is not None else StreamStats()
    decode = functools.partial(
        _decode, image_shape=tuple(image_shape), with_meta=with_meta, require_json=require_json
    )
    if isinstance(shards, EpochPlan):
        if shards.world_size != world_size:
            raise InputError(f"plan is for {shards.world_size} ranks, stream for {world_size}")
        plan = shards
    else:
        plan = EpochPlan(tuple(shards), (1,) * len(shards), seed, world_size)
    spec = PipelineSpec(plan, rank, decode, batch_size, shuffle_window, seed,
                        on_bad_sample == "stop", store)  # fmt: skip
    return BatchStream(spec, num_loader_workers, stats, on_shard_end, pin_memory)


class _OneShape:
    """_decode with every image of one (C, H, W): image_shape when given, else the first good
    sample's, so a corpus of mixed sizes has its odd ones out as bad samples (url and key)."""

    def __init__(
        self, image_shape: tuple[int, int, int] | None, with_meta: bool, require_json: bool
    ) -> None:
        self.image_shape, self.with_meta, self.require_json = image_shape, with_meta, require_json

    def __call__(self, raw: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        img, meta = _decode(raw, self.image_shape, self.with_meta, self.require_json)
        if self.image_shape is None:
            self.image_shape = image_chw(img)
        return img, meta


def read_samples(
    urls: list[str],
    on_bad_sample: str = "skip",
    stats: StreamStats | None = None,
    *,
    image_shape: tuple[int, int, int] | None = None,
    store: Location | None = None,
    require_json: bool = False,
) -> Iterator[tuple[str, np.ndarray, dict, str]]:
    """Every sample of every shard, in order, once: (key, image array, json dict or {}, url).

    For refinement and evaluation. Bad samples are skipped or raise as in batch_stream; images
    of another (C,H,W) than image_shape (or, without it, than the first good sample) count as
    bad; with require_json, samples without a json annotation do. store: where the shards are
    (the corpus location), its options reach each shard.
    """
    if on_bad_sample not in BAD_SAMPLE_CHOICES:
        raise InputError(
            f"on_bad_sample must be one of {BAD_SAMPLE_CHOICES}, got {on_bad_sample!r}"
        )
    stats = stats if stats is not None else StreamStats()
    decode = _OneShape(image_shape, with_meta=True, require_json=require_json)
    for url in urls:
        for item in _shard_items(on_store(url, store), decode):
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


def _load(
    location: Location,
    allow_pipe: bool,
    on_bad_sample: str,
    limit: int | None,
    stats: StreamStats | None,
    image_shape: tuple[int, int, int] | None = None,
) -> tuple[list[np.ndarray], list[dict]]:
    """Each image in its own dtype, all of one (C, H, W): image_shape, else the one the
    corpus's manifest declares, else the first good sample's; and their metas, in shard order."""
    images, metas = [], []
    shard_urls = resolve_shard_urls(location, allow_pipe)
    if image_shape is None:  # so an odd first sample is the one skipped, not all after it
        image_shape = declared_shape(location)
    samples = read_samples(
        shard_urls, on_bad_sample, stats, image_shape=image_shape, store=location
    )
    for key, img, meta, url in itertools.islice(samples, limit):
        images.append(img)
        metas.append({**meta, "__key__": key, "__url__": url})
    if not images:
        raise InputError(f"{location}: no usable samples")
    return images, metas


def load_batch(
    location: Location | str,
    *,
    allow_pipe: bool = False,
    on_bad_sample: str = "skip",
    limit: int | None = None,
    stats: StreamStats | None = None,
    image_shape: tuple[int, int, int] | None = None,
) -> tuple[torch.Tensor, list[dict]]:
    """All images of a (small) corpus as one float batch (N,C,H,W) in [-1, 1], each image
    mapped by its own bit depth (a 16-bit PNG among 8-bit ones changes no other image), and
    their metas (json plus "__key__" and "__url__"), in shard order; at most limit samples.
    Images of another (C,H,W) than image_shape (or the first good sample's) are bad samples."""
    images, metas = _load(
        Location.of(location), allow_pipe, on_bad_sample, limit, stats, image_shape
    )
    return to_batch(images), metas


def load_arrays(
    location: Location | str,
    *,
    allow_pipe: bool = False,
    on_bad_sample: str = "skip",
    limit: int | None = None,
    stats: StreamStats | None = None,
) -> tuple[np.ndarray, list[dict]]:
    """All images of a (small) corpus stacked as they are stored, uint8 or uint16 (N,H,W[,C]),
    and their metas as load_batch gives them. A corpus of both bit depths is refused: stacking
    would promote its 8-bit images to 16-bit levels (load_batch maps each image by its own)."""
    images, metas = _load(Location.of(location), allow_pipe, on_bad_sample, limit, stats)
    odd = next((i for i, img in enumerate(images) if img.dtype != images[0].dtype), None)
    if odd is not None:
        raise InputError(
            f"{metas[odd]['__url__']} key {metas[odd]['__key__']}: a {images[odd].dtype} image "
            f"among {images[0].dtype} ones (first: key {metas[0]['__key__']}); stacked arrays "
            "need one bit depth"
        )
    return np.stack(images), metas
