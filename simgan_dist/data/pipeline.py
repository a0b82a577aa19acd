"""A rank's endless batch pipeline, and its position: resume without replaying what was trained.

Per loader worker: raw tar samples of the worker's shards (the catalog's plan), cut into windows
of shuffle_window samples, each window permuted by a seed of its own, then decoded and batched.
Every batch carries its worker's cursor: where that worker's current window starts (epoch, shard
in the worker's list, sample in that shard), the window's number and how many of its samples
have been taken. So a resumed stream starts reading at the window's shard: the shards before it,
and every earlier epoch, are not opened; the samples of that shard before the window are read as
tar members and dropped undecoded, as are the window's samples taken before the checkpoint. What
a resume costs is at most one shard's reading plus one window, whatever was trained before.

A window shuffle, not a reservoir: a reservoir buffer's content after n samples depends on all n,
so resuming it means replaying them (or saving the buffer); a window depends on its own seed.
Decoding comes after the shuffle, so where a sample turns out bad (undecodable, wrong shape) only
changes the batch it would have joined, never the order of the others.
"""

from __future__ import annotations

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

import torch
from torch.utils.data import DataLoader, IterableDataset

from simgan_dist.data.catalog import EpochPlan
from simgan_dist.errors import InputError, kind
from simgan_dist.io.location import Location, on_store, prefetch
from simgan_dist.io.shardio import iter_tar_samples, iter_tar_stream
from simgan_dist.model.pixels import to_batch
from simgan_dist.seeds import seed_for

log = logging.getLogger(__name__)

MAX_SKIPS_KEPT = 100  # StreamStats.skipped keeps the first few; num_skipped counts all
# A tar that breaks off part-way (tar_reader raises ReadError; gzip and zlib their own): its
# bytes are what they are, so reading it again gives the same. Anything else (missing object,
# dropped connection) may read fine next time.
DAMAGE_ERRORS = (tarfile.ReadError, EOFError, zlib.error, gzip.BadGzipFile)
PREFETCH_BATCHES = 4  # per loader worker: memory for 4 * workers batches


class BadSampleError(InputError):
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


@dataclass(frozen=True)
class _ShardEnd:
    """Marker: this reader has read a shard to its end (reported to the shard catalog)."""

    epoch: int
    url: str


@dataclass(frozen=True)
class _Raw:
    """An undecoded sample and where it sits: epoch, shard index in the worker's list, position."""

    raw: dict[str, Any]
    epoch: int
    shard: int
    member: int


def raw_samples(
    shard: Location,
    stride: int = 1,
    offset: int = 0,
    fetched: bytes | BaseException | None = None,
    first: int = 0,
) -> Iterator[tuple[int, dict[str, Any]] | _Skip]:
    """(position, raw sample) of one shard for positions % stride == offset and >= first; one
    _Skip naming the last good key when the tar cannot be read to its end (a tar stream cannot
    resync). fetched: the shard's bytes (or download error) from location.prefetch; None opens
    it."""
    url, last_key = shard.url, "<start of shard>"
    try:
        if isinstance(fetched, BaseException):
            raise fetched
        if fetched is None:
            raws = iter_tar_samples(shard)
        else:
            raws = iter_tar_stream(io.BytesIO(fetched), url)
        for pos, raw in enumerate(raws):
            last_key = raw["__key__"]
            if pos >= first and pos % stride == offset:
                yield pos, raw
    except Exception as err:
        failure = "damaged" if isinstance(err, DAMAGE_ERRORS) else "unreadable"
        yield _Skip(url, f"after {last_key}", f"{failure} tar: {kind(err)}: {err}", failure)


def _source(
    plan: EpochPlan,
    rank: int,
    worker: int,
    num_workers: int,
    store: Location | None,
    start: dict[str, int] | None,
) -> Iterator[_Raw | _Skip | _ShardEnd]:
    """Endless epochs over this loader worker's share, from start (a cursor) on.

    The worker split follows the plan's rule one level down: whole shards when the rank has at
    least as many shards as loader workers (shards[i::n]), otherwise every worker reads all of
    them and keeps sample positions pos % n == i."""
    first_epoch = start["epoch"] if start else plan.start_epoch
    for epoch in itertools.count(first_epoch):
        share = plan.for_rank(epoch, rank)
        stride, offset = share.stride, share.offset
        by_shard = len(share.urls) >= num_workers
        if not by_shard:
            offset, stride = offset + stride * worker, stride * num_workers
        mine = share.urls[worker::num_workers] if by_shard else share.urls
        resumed = start is not None and epoch == first_epoch
        first_shard = start["shard"] if start and resumed else 0
        num_raw = 0
        fetched = prefetch([on_store(url, store) for url in mine[first_shard:]])
        for index, (url, data) in enumerate(zip(mine[first_shard:], fetched, strict=True)):
            shard = first_shard + index
            first = start["member"] if start and resumed and index == 0 else 0
            for item in raw_samples(on_store(url, store), stride, offset, data, first):
                if isinstance(item, _Skip):
                    yield item
                    continue
                num_raw += 1
                yield _Raw(item[1], epoch, shard, item[0])
            yield _ShardEnd(epoch, url)
        if num_raw == 0 and mine and epoch not in plan.redealt and not resumed:
            # Without this, an all-unreadable share would spin forever without a batch.
            raise InputError(
                f"rank {rank} loader worker {worker}: a whole epoch over {len(mine)} shard(s) "
                f"gave no usable samples (first: {mine[:1]})"
            )


def _windows(
    items: Iterator[_Raw | _Skip | _ShardEnd], size: int, seed: str, start: dict[str, int] | None
) -> Iterator[tuple[_Raw, dict[str, int]] | _Skip | _ShardEnd]:
    """(sample, cursor after taking it) in window order; markers pass straight through, except
    those met while refilling a resumed window (they were reported before the checkpoint)."""
    number = start["window"] if start else 0
    num_taken = start["taken"] if start else 0
    quiet = start is not None
    while True:
        window: list[_Raw] = []
        for item in items:
            if isinstance(item, _Raw):
                window.append(item)
                if len(window) == size:
                    break
            elif not quiet:
                yield item
        if not window:
            return
        quiet = False
        order = list(range(len(window)))
        random.Random(seed_for(seed, "window", number)).shuffle(order)
        head = window[0]
        for taken, i in enumerate(order, 1):
            if taken > num_taken:  # those up to num_taken were trained before the resume
                yield window[i], {"epoch": head.epoch, "shard": head.shard,
                                  "member": head.member, "window": number, "taken": taken}  # fmt: skip
        number, num_taken = number + 1, 0


def _decoded_batches(
    items: Iterator[Any],
    decode: Callable[[dict[str, Any]], tuple[Any, dict[str, Any]]],
    batch_size: int,
    stop_on_bad: bool,
    worker: int,
    exempt: set[int],
) -> Iterator[tuple]:
    """("batch", images, metas, skips, shard_ends, cursor) with exactly batch_size samples; ends
    with one ("bad", msg) when stopping on a bad sample, or ("error", msg) when reading failed.
    exempt: epochs not checked for having given at least one good sample.

    An epoch is judged only once it is over. Windows straddle epochs and are shuffled, so
    samples of two epochs alternate in window order; but raw samples come in epoch order, so a
    window's first sample (the cursor's epoch) is of its lowest epoch, and every epoch below
    that has been taken whole."""
    try:
        images, metas, skips, ends = [], [], [], []
        num_good: dict[int, int] = {}  # good samples so far of each epoch not yet over
        for item in items:
            if isinstance(item, _ShardEnd):
                ends.append(item)
                continue
            if not isinstance(item, _Skip):
                sample, cursor = item
                for epoch in [e for e in num_good if e < cursor["epoch"]]:
                    if num_good.pop(epoch) == 0 and epoch not in exempt:
                        # Without this, an all-bad share would spin forever without a batch.
                        raise InputError(
                            f"loader worker {worker}: a whole epoch ({epoch}) gave no usable "
                            f"samples (up to {sample.raw['__url__']})"
                        )
                num_good.setdefault(sample.epoch, 0)
                try:
                    image, meta = decode(sample.raw)
                except Exception as err:  # PIL, json and shape errors all mean "bad sample"
                    raw = sample.raw
                    item = _Skip(raw["__url__"], raw["__key__"], f"{kind(err)}: {err}")
            if isinstance(item, _Skip):
                if stop_on_bad:
                    yield ("bad", f"bad sample {item.describe()}")
                    return
                skips.append(item.describe())
                continue
            num_good[sample.epoch] += 1
            meta["__epoch__"] = sample.epoch
            images.append(image)
            metas.append(meta)
            if len(images) == batch_size:
                yield ("batch", to_batch(images), metas, skips, ends, {**cursor, "worker": worker})
                images, metas, skips, ends = [], [], [], []
    except Exception as err:  # reported in the caller's process as a ValueError, not a worker crash
        yield ("error", f"{kind(err)}: {err}")


@dataclass
class PipelineSpec:
    """Everything a loader worker needs to run its part (picklable)."""

    plan: EpochPlan
    rank: int
    decode: Any
    batch_size: int
    shuffle_window: int
    seed: int
    stop_on_bad: bool
    store: Location | None = None  # where the plan's shards are (its options reach each one)


class _RankPipeline(IterableDataset):
    """The pipeline of whichever loader worker runs it. Workers take logical ids rotated by the
    batches already drawn: the DataLoader hands out batches round-robin from physical worker 0,
    so after n batches the next one must come from logical worker n % num_workers."""

    def __init__(self, spec: PipelineSpec, starts: dict[int, dict[str, int]], rotation: int):
        super().__init__()
        self.spec, self.starts, self.rotation = spec, starts, rotation

    def __iter__(self) -> Iterator[tuple]:
        info = torch.utils.data.get_worker_info()
        physical, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        worker = (physical + self.rotation) % num_workers
        s, start = self.spec, self.starts.get(worker)
        raws = _source(s.plan, s.rank, worker, num_workers, s.store, start)
        windows = _windows(raws, s.shuffle_window, f"{s.seed}/shuffle/{s.rank}/{worker}", start)
        exempt = set(s.plan.redealt) | ({start["epoch"]} if start else set())
        return _decoded_batches(windows, s.decode, s.batch_size, s.stop_on_bad, worker, exempt)


def _identity(item: Any) -> Any:
    return item  # DataLoader collate_fn: batches are built in the pipeline already


class BatchStream:
    """Endless (images, metas) batches of one rank; position() after any batch, seek() before
    the first: the stream then goes on exactly as the one whose position it was."""

    def __init__(
        self,
        spec: PipelineSpec,
        num_loader_workers: int,
        stats: StreamStats,
        on_shard_end: Callable[[int, str], None] | None,
        pin_memory: bool = False,
    ) -> None:
        self.spec, self.num_loader_workers = spec, num_loader_workers
        self.pin_memory = pin_memory  # page-locked batches, for copies that overlap on CUDA
        self.stats, self.on_shard_end = stats, on_shard_end
        self.num_batches = 0
        self.cursors: dict[int, dict[str, int]] = {}  # loader worker -> cursor of its last batch
        self._items: Iterator[tuple] | None = None

    def position(self) -> dict[str, Any]:
        return {"num_batches": self.num_batches,
                "cursors": {str(w): dict(c) for w, c in self.cursors.items()}}  # fmt: skip

    def seek(self, position: dict[str, Any]) -> None:
        if self._items is not None:
            raise RuntimeError("BatchStream.seek: only before the first batch")
        self.num_batches = int(position["num_batches"])
        self.cursors = {int(w): dict(c) for w, c in position["cursors"].items()}

    def _open(self) -> Iterator[tuple]:
        rotation = self.num_batches % max(1, self.num_loader_workers)
        dataset = _RankPipeline(self.spec, self.cursors, rotation)
        if self.num_loader_workers == 0:
            return iter(dataset)
        loader = DataLoader(dataset, batch_size=None, num_workers=self.num_loader_workers,
                            collate_fn=_identity, prefetch_factor=PREFETCH_BATCHES,
                            pin_memory=self.pin_memory)  # fmt: skip
        return iter(loader)

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> tuple[torch.Tensor, list[dict]]:
        if self._items is None:
            self._items = self._open()
        kind, *rest = next(self._items)
        if kind != "batch":
            raise BadSampleError(rest[0]) if kind == "bad" else ValueError(rest[0])
        images, metas, skips, ends, cursor = rest
        if self.on_shard_end is not None:
            for end in ends:
                self.on_shard_end(end.epoch, end.url)
        for what in skips:
            log.warning("skipping bad sample %s", what)
            self.stats.record_skip(what)
        self.stats.num_samples += len(metas)
        self.cursors[cursor["worker"]] = cursor
        self.num_batches += 1
        if self.pin_memory and self.num_loader_workers == 0:
            images = images.pin_memory()
        return images, metas
