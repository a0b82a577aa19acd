"""WebDataset shards -> infinite, per-rank torch batch streams, and finite ordered readers."""

from __future__ import annotations

import functools
import gzip
import io
import itertools
import logging
import random
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset

from simgan_dist.data.catalog import EpochPlan
from simgan_dist.io import urls as urlmod
from simgan_dist.io.sample_fields import decode_annotations, decode_image, has_annotation
from simgan_dist.io.shardio import (
    check_key,
    image_chw,
    iter_tar_samples,
    iter_tar_stream,
    resolve_shard_urls,
)
from simgan_dist.model.pixels import to_batch

log = logging.getLogger(__name__)

MAX_SKIPS_KEPT = 100  # StreamStats.skipped keeps the first few; num_skipped counts all
BAD_SAMPLE_CHOICES = ("skip", "stop")
# A tar that breaks off part-way (tar_reader raises ReadError; gzip and zlib their own): its
# bytes are what they are, so reading it again gives the same. Anything else (missing object,
# dropped connection) may read fine next time.
DAMAGE_ERRORS = (tarfile.ReadError, EOFError, zlib.error, gzip.BadGzipFile)


class BadSampleError(ValueError):
    """A sample that cannot be used (damaged or unreadable tar, undecodable PNG, wrong shape), by url and key."""


@dataclass
class StreamStats:
    """What a reader delivered and what it skipped; filled in the caller's process."""

    num_samples: int = 0
    num_skipped: int = 0
    skipped: list[str] = field(default_factory=list)  # "url key ...: reason", first MAX_SKIPS_KEPT
    # Shards whose reading stopped early, by url: "damaged: <what>" (the bytes are there but the
    # tar breaks off: what follows is lost) or "unreadable: <what>" (could not be opened or
    # fetched, e.g. deleted or a dropped connection: reading it again may work).
    shard_failures: dict[str, str] = field(default_factory=dict)

    def record_skip(self, what: str) -> None:
        self.num_skipped += 1
        if len(self.skipped) < MAX_SKIPS_KEPT:
            self.skipped.append(what)


@dataclass(frozen=True)
class _Skip:
    """Marker for a bad sample; travels through the pipeline (and loader workers) as data."""

    url: str
    key: str
    reason: str
    shard_failure: str = ""  # "damaged" or "unreadable" when the whole rest of the shard is lost

    def describe(self) -> str:
        return f"{self.url} key {self.key}: {self.reason}"


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
    url: str,
    decode: Any,
    stride: int = 1,
    offset: int = 0,
    storage_options: dict[str, Any] | None = None,
    fetched: bytes | BaseException | None = None,
) -> Iterator[Any]:
    """Decoded samples of one shard whose position % stride == offset; _Skip for bad ones.
    fetched: the shard's bytes (or download error) from urlmod.prefetch; None opens the URL.

    A damaged tar ends the shard (a tar stream cannot resync) with one _Skip naming the last
    good key, so the samples before the damage are still used.
    """
    last_key = "<start of shard>"
    try:
        if isinstance(fetched, BaseException):
            raise fetched
        if fetched is None:
            raws = iter_tar_samples(url, storage_options)
        else:
            raws = iter_tar_stream(io.BytesIO(fetched), url)
        for pos, raw in enumerate(raws):
            last_key = raw["__key__"]
            if pos % stride != offset:
                continue
            try:
                item = decode(raw)
            except Exception as err:  # PIL, json and shape errors all mean "bad sample"
                item = _Skip(url, raw["__key__"], f"{type(err).__name__}: {err}")
            yield item
    except Exception as err:
        failure = "damaged" if isinstance(err, DAMAGE_ERRORS) else "unreadable"
        yield _Skip(
            url, f"after {last_key}", f"{failure} tar: {type(err).__name__}: {err}", failure
        )


@dataclass(frozen=True)
class _ShardEnd:
    """Marker: this reader has read a shard to its end (reported to the shard catalog)."""

    epoch: int
    url: str


class _ReaderSource(IterableDataset):
    """Endless epochs over this reader's share: the rank's shards from the catalog's plan, then
    the loader-worker share of those.

    The worker split follows the plan's rule one level down: whole shards when the rank has at
    least as many shards as loader workers (shards[i::n]), otherwise every worker reads all of
    them and keeps sample positions pos % n == i.
    """

    def __init__(
        self,
        plan: EpochPlan,
        rank: int,
        decode: Any,
        storage_options: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.plan, self.rank = plan, rank
        self.decode, self.storage_options = decode, storage_options

    def __iter__(self) -> Iterator[Any]:
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for epoch in itertools.count(self.plan.start_epoch):
            share = self.plan.for_rank(epoch, self.rank)
            stride, offset = share.stride, share.offset
            by_shard = len(share.urls) >= num_workers
            if not by_shard:
                offset, stride = offset + stride * worker, stride * num_workers
            mine = share.urls[worker::num_workers] if by_shard else share.urls
            good = 0
            fetched = urlmod.prefetch(mine, self.storage_options)
            for url, data in zip(mine, fetched, strict=True):
                items = _shard_items(url, self.decode, stride, offset, self.storage_options, data)
                for item in items:
                    if not isinstance(item, _Skip):
                        good += 1
                        item[1]["__epoch__"] = epoch
                    yield item
                yield _ShardEnd(epoch, url)
            if good == 0 and mine and epoch not in self.plan.redealt:
                # Without this, an all-bad share would spin forever without a batch.
                raise ValueError(
                    f"rank {self.rank} loader worker {worker}: a whole epoch over "
                    f"{len(mine)} shard(s) gave no usable samples (first: {mine[:1]})"
                )


def _shuffle(items: Iterator[Any], bufsize: int, seed: str) -> Iterator[Any]:
    """Shuffle buffer for good samples. Yields only once bufsize samples are held, so the first
    batch costs bufsize decodes (the price of uniform mixing from the start). _Skip markers pass
    straight through so they are reported (or stop the stream) without that wait."""
    rng = random.Random(seed)
    buf: list[Any] = []
    for item in items:
        if isinstance(item, (_Skip, _ShardEnd)):
            yield item
            continue
        buf.append(item)
        if len(buf) >= bufsize:
            i = rng.randrange(len(buf))
            buf[i], buf[-1] = buf[-1], buf[i]
            yield buf.pop()


def _batches(items: Iterator[Any], batch_size: int, stop_on_bad: bool) -> Iterator[tuple]:
    """("batch", images, metas, skips, shard_ends) with exactly batch_size samples; ends with one
    ("bad", msg) when stopping on a bad sample, or ("error", msg) when the reader failed."""
    try:
        images, metas, skips, ends = [], [], [], []
        for item in items:
            if isinstance(item, _ShardEnd):
                ends.append(item)
                continue
            if isinstance(item, _Skip):
                if stop_on_bad:
                    yield ("bad", f"bad sample {item.describe()}")
                    return
                skips.append(item.describe())
                continue
            images.append(item[0])
            metas.append(item[1])
            if len(images) == batch_size:
                yield ("batch", to_batch(images), metas, skips, ends)
                images, metas, skips, ends = [], [], [], []
    except Exception as err:  # reported in the caller's process as a ValueError, not a worker crash
        yield ("error", f"{type(err).__name__}: {err}")


def _identity(item: Any) -> Any:
    return item  # DataLoader collate_fn: batches are built in the pipeline already


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
) -> Iterator[tuple[torch.Tensor, list[dict]]]:
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
    source = _ReaderSource(plan, rank, decode, storage_options)
    pipeline = wds.DataPipeline(
        source,
        # Seeded per loader worker: each shuffles its own disjoint stream.
        _WorkerSeeded(_shuffle, bufsize=shuffle_buffer, seed=f"{seed}/shuffle/{rank}"),
        functools.partial(_batches, batch_size=batch_size, stop_on_bad=on_bad_sample == "stop"),
    )
    if num_loader_workers > 0:
        # prefetch_factor batches per worker are decoded ahead: memory for 4 * workers batches.
        loader = DataLoader(
            pipeline,
            batch_size=None,
            num_workers=num_loader_workers,
            collate_fn=_identity,
            prefetch_factor=4,
            pin_memory=pin_memory,
        )
        items: Iterator[tuple] = iter(loader)
    else:
        items = iter(pipeline)
    for kind, *rest in items:
        if kind != "batch":
            raise BadSampleError(rest[0]) if kind == "bad" else ValueError(rest[0])
        images, metas, skips, ends = rest
        if on_shard_end is not None:
            for end in ends:
                on_shard_end(end.epoch, end.url)
        for what in skips:
            log.warning("skipping bad sample %s", what)
            stats.record_skip(what)
        stats.num_samples += len(metas)
        if pin_memory and num_loader_workers == 0:
            images = images.pin_memory()
        yield images, metas


class _WorkerSeeded:
    """Pipeline stage that calls fn(items, seed=f"{seed}/{worker}") in whichever process runs it."""

    def __init__(self, fn: Any, *, seed: str, **kw: Any):
        self.fn, self.seed, self.kw = fn, seed, kw

    def __call__(self, items: Iterator[Any]) -> Iterator[Any]:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        return self.fn(items, seed=f"{self.seed}/{worker}", **self.kw)


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
