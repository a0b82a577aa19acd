"""Refining one shard: read, decode, refine in batches, encode and publish, in overlapping threads.

Free of Ray: refine/ray_pool.py runs ShardRefiner inside actors, and the benchmark runs it bare. Per
shard, a reader thread decodes PNGs into batches, the calling thread runs R, and a writer thread
encodes and uploads; PIL and torch release the GIL, so the three overlap. Only the forward pass
is serialised (one lock), so a worker may refine two shards at once and keep R busy while one
shard starts or finishes. The output shard is published atomically, then its done-record
(refine/ledger.py): that order makes a killed job lose at most the shards in flight.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from simgan_dist.config import BAD_SAMPLE_CHOICES, REFINE_PRECISION_CHOICES, ModelConfig
from simgan_dist.config.rules import Rule, Section, at_least, checked, one_of
from simgan_dist.config.schema import OnBadSample, RefinePrecision
from simgan_dist.data.reader import StreamStats, read_samples
from simgan_dist.io.location import Location
from simgan_dist.io.sample_fields import kept_annotations
from simgan_dist.io.shardio import plain_tar_name, write_shard
from simgan_dist.model.networks import build_refiner
from simgan_dist.model.pixels import to_batch, to_uint8
from simgan_dist.refine import ledger as refine_ledger
from simgan_dist.seeds import seed_for

QUEUE_BATCHES = 4  # decoded and refined batches held per shard: bounds memory, absorbs jitter
_END = object()  # end-of-stream marker in the thread queues


@dataclass(frozen=True, kw_only=True)
class RefineSettings(Section):
    """How refinement runs; none of it changes which images come out (bf16 changes pixels a
    little). A config section like the training ones: each field's rule is checked when it is
    built, an error naming `refine.<field>`."""

    SECTION: ClassVar[str] = "refine"
    batch_size: int = checked(256, at_least(1))
    # 0: one per GPU with use_gpu, else one per threads_per_worker cluster CPUs
    num_workers: int = checked(0, at_least(0))
    # torch threads (and the CPUs each worker asks Ray for)
    threads_per_worker: int = checked(2, at_least(1))
    # shards a worker holds at once; their reading/writing overlaps R
    shards_per_worker: int = checked(2, at_least(1))
    use_gpu: bool = False
    # GPUs per worker with use_gpu: a fraction shares one GPU among several workers (each
    # decodes and encodes on its own CPUs while the others' forwards keep the GPU busy)
    gpus_per_worker: float = checked(1.0, Rule(lambda v: 0 < v <= 1, "must be in (0, 1]"))
    # auto: bf16 autocast on GPU, fp32 on CPU
    precision: RefinePrecision = checked("auto", one_of(*REFINE_PRECISION_CHOICES))
    # NHWC convolutions: faster on CPU (oneDNN) and on tensor cores
    channels_last: bool = True
    # skip: listed in the report; stop: the job stops
    on_bad_sample: OnBadSample = checked("skip", one_of(*BAD_SAMPLE_CHOICES))
    # Refined copies per input sample, each from its own draw of R's noise input; 1 keeps the
    # input's keys, K > 1 writes <key>_v0 .. <key>_v{K-1} (variant_key).
    num_variants: int = checked(1, at_least(1))

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16" or (self.precision == "auto" and self.use_gpu)


def variant_key(key: str, variant: int, num_variants: int) -> str:
    """The output key of one refined copy: the input key itself when there is one copy."""
    return key if num_variants == 1 else f"{key}_v{variant}"


def noise_seed(shard_name: str, variant: int) -> int:
    """Seed of R's noise for one shard and variant: a redone shard gets the same pixels."""
    return seed_for(shard_name, variant)


@dataclass
class ShardResult:
    """One input shard's outcome; also the body of its done-record."""

    source: str
    name: str  # output shard name (the input's base name; .tar for a compressed input)
    num_samples: int = 0
    num_skipped: int = 0  # bad samples, plus those lost in a damaged tar when the count is known
    skipped: list[str] = field(default_factory=list)
    # "damaged: ..." when the tar broke off part-way (published with what came before, recorded
    # done: reading it again gives the same); num_lost: the samples after the damage, from the
    # input manifest's count (None without one).
    damaged: str = ""
    num_lost: int | None = None
    # "unreadable: ..." when the shard could not be read to its end for another reason (deleted,
    # dropped connection): nothing published, no done-record, so a rerun refines it again.
    failed: str = ""
    shard: dict | None = None  # the ShardInfo fields; None when no sample survived
    lineage: dict[str, str] = field(default_factory=dict)
    started: float = 0.0  # wall clock (time.time) on the worker
    finished: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ShardRefiner:
    """R in eval mode plus the per-shard pipeline; one per worker process."""

    def __init__(
        self,
        weights: dict[str, torch.Tensor],
        model: ModelConfig,
        settings: RefineSettings,
        lineage: dict[str, str],
    ) -> None:
        self.settings, self.lineage = settings, lineage
        self.device = torch.device("cuda" if settings.use_gpu else "cpu")
        self.image_shape = (model.image_channels, model.image_height, model.image_width)
        self.memory_format = (
            torch.channels_last if settings.channels_last else torch.preserve_format
        )
        refiner = build_refiner(model)
        refiner.load_state_dict(weights)
        self.refiner = refiner.to(self.device, memory_format=self.memory_format).eval()  # type: ignore[call-overload]
        self._forward_lock = threading.Lock()
        self.in_progress: dict[str, int] = {}  # source url -> samples refined so far (progress)

    @torch.inference_mode()
    def forward(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> np.ndarray:
        """Float (N,C,H,W) in [-1, 1] -> refined uint8 (N,H,W[,C]); R's noise input, if it has
        one, drawn from generator (on the CPU, so the draw is the same on every device)."""
        x = batch.to(self.device, memory_format=self.memory_format, non_blocking=True)
        noise = self.refiner.noise_like(batch, generator)
        if noise is not None:
            noise = noise.to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.settings.bf16):
            y = self.refiner(x, noise=noise)
        return to_uint8(y)

    def refine_shard(
        self,
        shard: Location | str,
        output: Location | str,
        expected_samples: int | None = None,
    ) -> ShardResult:
        """Refine one input shard into output/<its name> and record it done; raises on a write
        failure, and on a bad sample when settings.on_bad_sample is "stop". expected_samples
        (the input manifest's count) sizes the loss of a damaged tar; a shard that cannot be
        read to its end is returned with `failed` set, neither published nor recorded done."""
        shard, output = Location.of(shard), Location.of(output)
        source = shard.url
        name = plain_tar_name(shard.name)  # written uncompressed, whatever it was
        out_shard = output.join(name)
        result = ShardResult(source, name, lineage=self.lineage)
        result.started = time.time()
        stats = StreamStats()
        decoded: queue.Queue = queue.Queue(QUEUE_BATCHES)
        stop = threading.Event()  # set when the consumer gives up: the reader stops early
        reader = threading.Thread(target=self._read, args=(shard, stats, decoded, stop))
        reader.start()
        writer: _Writer | None = None
        num_variants = self.settings.num_variants
        generators = [
            torch.Generator().manual_seed(noise_seed(name, v)) for v in range(num_variants)
        ]
        self.in_progress[source] = 0
        failure = ""
        try:
            while (item := decoded.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                keys, tensor, metas = item
                if writer is None:  # started on the first batch: a shard with none is not written
                    writer = _Writer(out_shard)
                for variant, generator in enumerate(generators):
                    with self._forward_lock:
                        refined = self.forward(tensor, generator)
                    writer.put([
                        (variant_key(key, variant, num_variants), img,
                         self._annotate(meta, source, key, variant))
                        for key, img, meta in zip(keys, refined, metas, strict=True)
                    ])  # fmt: skip
                self.in_progress[source] += len(keys) * num_variants
            failure = stats.shard_failures.get(source, failure)
            if failure.startswith("unreadable"):
                if writer is not None:
                    writer.abort()
                    writer = None
                result.failed = failure
            elif writer is not None:
                result.shard = writer.finish()
        except BaseException:
            stop.set()
            if writer is not None:
                writer.abort()  # its temporary is removed; nothing appears under out_shard
            raise
        finally:
            self.in_progress.pop(source, None)
            _drain(decoded, reader)
        result.num_samples = result.shard["num_samples"] if result.shard else 0
        result.num_skipped, result.skipped = stats.num_skipped, stats.skipped
        result.finished = time.time()
        if result.failed:
            return result
        num_bad = stats.num_skipped - (1 if failure else 0)  # the damage is one skip record
        num_read = result.num_samples // self.settings.num_variants + num_bad
        if not failure and expected_samples is not None and num_read < expected_samples:
            # Cut at a member boundary, a tar looks whole: only the manifest's count tells.
            failure = (
                f"damaged: {source}: ends after {num_read} of the {expected_samples} samples "
                "its manifest lists"
            )
        if failure.startswith("damaged"):
            result.damaged = failure
            if expected_samples is not None:
                result.num_lost = max(0, expected_samples - num_read)
                result.num_skipped = num_bad + result.num_lost
        refine_ledger.write_done(output, result.to_dict())
        return result

    def _annotate(self, meta: dict, source: str, key: str, variant: int) -> dict:
        annotations = kept_annotations(meta)
        lineage: dict[str, Any] = {"source_shard": source, **self.lineage}
        if self.settings.num_variants > 1:
            lineage.update(source_key=key, variant=variant)
        annotations["lineage"] = lineage
        return annotations

    def _host_batch(self, images: list[np.ndarray]) -> torch.Tensor:
        """A float batch; for a GPU in pinned memory, pinned here in the reader thread ahead of
        use, so forward()'s non_blocking copy is a real asynchronous one."""
        batch = to_batch(images)
        return batch.pin_memory() if self.device.type == "cuda" else batch

    def _read(self, shard: Location, stats: StreamStats, out: queue.Queue, stop: threading.Event):
        """Reader thread: decoded samples in batches of (keys, float tensor, metas), then _END,
        or the exception that stopped it."""
        try:
            samples = read_samples(
                [shard.url],
                self.settings.on_bad_sample,
                stats,
                image_shape=self.image_shape,
                store=shard,
                require_json=True,  # a refined copy without its annotation is of no use
            )
            keys, images, metas = [], [], []
            for key, img, meta, _ in samples:
                keys.append(key)
                images.append(img)
                metas.append(meta)
                if len(keys) == self.settings.batch_size:
                    if not _put(out, (keys, self._host_batch(images), metas), stop):
                        return
                    keys, images, metas = [], [], []
            if keys and not _put(out, (keys, self._host_batch(images), metas), stop):
                return
            _put(out, _END, stop)
        except BaseException as err:  # handed to the consumer, which raises it in its thread
            _put(out, err, stop)


class _Writer:
    """Writer thread: encodes and streams samples into one atomically published shard."""

    def __init__(self, shard: Location) -> None:
        self.items: queue.Queue = queue.Queue(QUEUE_BATCHES)
        self.info: dict | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(shard,))
        self.thread.start()

    def _samples(self) -> Iterator[tuple]:
        while (batch := self.items.get()) is not _END:
            if isinstance(batch, BaseException):
                raise batch  # inside atomic_write: the temporary is removed
            yield from batch

    def _run(self, shard: Location) -> None:
        try:
            self.info = vars(write_shard(shard, self._samples()))
        except BaseException as err:
            self.error = err

    def put(self, batch: list[tuple]) -> None:
        while self.thread.is_alive():
            try:
                self.items.put(batch, timeout=0.5)
                return
            except queue.Full:
                continue
        raise self.error or RuntimeError("shard writer stopped")

    def finish(self) -> dict:
        self.put(_END)  # type: ignore[arg-type]
        self.thread.join()
        if self.error is not None:
            raise self.error
        assert self.info is not None
        return self.info

    def abort(self) -> None:
        if self.thread.is_alive():
            _put(self.items, RuntimeError("shard aborted"), threading.Event(), alive=self.thread)
        self.thread.join()


def _put(
    q: queue.Queue, item: Any, stop: threading.Event, alive: threading.Thread | None = None
) -> bool:
    """Put unless stop is set (or the consuming thread has ended); False when given up."""
    while not stop.is_set() and (alive is None or alive.is_alive()):
        try:
            q.put(item, timeout=0.5)
            return True
        except queue.Full:
            continue
    return False


def _drain(q: queue.Queue, thread: threading.Thread) -> None:
    """Unblock and join a producer thread whose consumer has stopped."""
    while thread.is_alive():
        try:
            q.get(timeout=0.1)
        except queue.Empty:
            pass
    thread.join()
