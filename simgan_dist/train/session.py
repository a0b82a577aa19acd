"""One training run's parts, built from the config and restored from a checkpoint in one order (Ray-free).

Every way of training builds its run here: the Ray Train worker (ray_train.train_worker, DeepSpeed
updaters and the shard streams), `simgan screen` (plain PyTorch updaters and in-memory batches),
the initial checkpoint, the benches and the tests. So a part added to a run (or to its checkpoint)
is added once, and every path gets it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

import torch

from simgan_dist.config import Config
from simgan_dist.data.catalog import ShardSource, local_catalogs
from simgan_dist.data.reader import StreamStats
from simgan_dist.data.streams import KeyLog, image_shape, make_batch_source
from simgan_dist.model.history import History, HistoryBuffer
from simgan_dist.model.networks import build_discriminator, build_refiner
from simgan_dist.seeds import seed_for
from simgan_dist.train import dist
from simgan_dist.train.checkpoint import CatalogRecord, Stateful, TrainingCheckpoint
from simgan_dist.train.engine import (
    DeepSpeedUpdater,
    TorchUpdater,
    Updater,
    make_lr_schedule,
    make_optimizer,
)
from simgan_dist.train.global_history import GlobalHistoryBuffer
from simgan_dist.train.loop import BatchSource, LoopState, StepHook, optimizer_steps, train
from simgan_dist.train.run_outputs import key_log_name
from simgan_dist.train.stats import Collector

UpdaterKind = Literal["deepspeed", "torch"]


def build_updaters(
    cfg: Config, device: torch.device, kind: UpdaterKind = "torch", world_size: int = 1
) -> tuple[Updater, Updater]:
    """R and D with their optimizers and lr schedules, the same initial weights on every rank
    (seeded by run.seed). "deepspeed" needs a process group (Ray Train's, or a test's)."""
    torch.manual_seed(seed_for(cfg.run.seed, "weights"))
    refiner_net = build_refiner(cfg.model).to(device)
    disc_net = build_discriminator(cfg.model).to(device)
    refiner_steps, disc_steps = optimizer_steps(cfg.schedule)
    r_optim = make_optimizer(refiner_net.parameters(), cfg.optim, cfg.optim.refiner_lr)
    d_optim = make_optimizer(disc_net.parameters(), cfg.optim, cfg.optim.disc_lr)
    r_schedule = make_lr_schedule(r_optim, cfg.optim, refiner_steps)
    d_schedule = make_lr_schedule(d_optim, cfg.optim, disc_steps)
    if kind == "torch":
        return (
            TorchUpdater(refiner_net, r_optim, r_schedule),
            TorchUpdater(disc_net, d_optim, d_schedule, name="discriminator"),
        )
    micro_batch = cfg.schedule.batch_size // (world_size * cfg.engine.grad_accum_steps)
    refiner = DeepSpeedUpdater(refiner_net, r_optim, micro_batch, cfg.engine, r_schedule)
    # D sees real and fake images of a step in one forward: twice the micro-batch.
    disc = DeepSpeedUpdater(
        disc_net, d_optim, 2 * micro_batch, cfg.engine, d_schedule, name="discriminator"
    )
    return refiner, disc


def build_buffer(
    cfg: Config, rank: int, world_size: int, device: torch.device | None = None
) -> History | None:
    """The paper's history buffer on one worker; on W workers one B-slot buffer, sampled
    globally. None when the config turns it off (history_fraction or buffer_size 0)."""
    if cfg.schedule.history_fraction == 0 or cfg.schedule.buffer_size == 0:
        return None
    if world_size == 1:
        seed = seed_for(cfg.run.seed, "history", 0)
        return HistoryBuffer(cfg.schedule.buffer_size, image_shape(cfg), seed=seed)
    return GlobalHistoryBuffer(
        cfg.schedule.buffer_size, image_shape(cfg), cfg.run.seed, rank, world_size,
        dist.all_gather_tensor,
    )  # fmt: skip


@dataclass
class TrainingSession:
    """Everything a training run holds, on one rank. Build it with TrainingSession.build."""

    cfg: Config
    rank: int
    world_size: int
    device: torch.device
    refiner: Updater
    disc: Updater
    buffer: History | None
    batch_source: BatchSource
    catalogs: Mapping[str, ShardSource] | None = None
    state: LoopState = field(default_factory=LoopState)
    # Bad samples the streams skipped (the loop never sees them) and the run's one metric
    # channel: the loop reports every step's values here, the hooks pop the interval's means.
    stream_stats: StreamStats = field(default_factory=StreamStats)
    metrics: Collector = field(default_factory=Collector)

    @classmethod
    def build(
        cls,
        cfg: Config,
        *,
        device: torch.device | None = None,
        updaters: UpdaterKind = "torch",
        catalogs: Mapping[str, ShardSource] | None = None,
        batch_source: BatchSource | None = None,
        checkpoint: str | Path | None = None,
        key_log_dir: Path | None = None,
    ) -> TrainingSession:
        """Build a run's parts and restore them from `checkpoint` (a local checkpoint
        directory), in this order:

        1. R and D, seeded by run.seed (the same initial weights on every rank), with their
           updaters (optimizer, lr schedule; DeepSpeed engines with updaters="deepspeed");
        2. the history buffer;
        3. the catalogs' record of finished shards (the streams are dealt from it);
        4. the streams (`batch_source`: this rank's shard streams unless given, e.g. screen's
           in-memory batches), with the catalogs given or a local catalog per corpus;
        5. the checkpoint's weights, then the per-rank parts (optimizer state after the weights:
           ZeRO copies the weights into its fp32 partition; buffer; the streams' position) and
           the loop counters;
        6. with data.record_keys, the key log, wrapped around the synthetic stream at its
           restored position (so a resume's fast-forward is not logged).

        The rank and world size are the process group's (dist), 0 of 1 without one."""
        rank, world_size = dist.rank(), dist.world_size()
        device = device or torch.device("cpu")
        refiner, disc = build_updaters(cfg, device, updaters, world_size)
        buffer = build_buffer(cfg, rank, world_size)
        directory = Path(checkpoint) if checkpoint is not None else None
        stream_stats = StreamStats()
        if batch_source is None:
            catalogs = catalogs or local_catalogs(cfg, world_size)
            if directory is not None:
                CatalogRecord(catalogs, cfg, rank, world_size).load_from(directory)
            elif cfg.run.elastic():  # the same test on every rank: all reach the barrier
                CatalogRecord(catalogs, cfg, rank, world_size).fit_world_size()
            batch_source = make_batch_source(cfg, rank, world_size, stream_stats, device, catalogs)
        session = cls(
            cfg, rank, world_size, device, refiner, disc, buffer, batch_source, catalogs,
            stream_stats=stream_stats,
        )  # fmt: skip
        if directory is not None:
            session.checkpoint().load(directory)
        if key_log_dir is not None and cfg.data.record_keys:
            streams = session.batch_source
            assert hasattr(streams, "synthetic") and hasattr(streams, "num_synthetic")
            path = key_log_dir / key_log_name(rank)
            streams.synthetic = KeyLog(streams.synthetic, path, start=streams.num_synthetic)
        return session

    def checkpoint(self) -> TrainingCheckpoint:
        """The run's parts by the names its checkpoint files use."""
        # Streams have a position to save; in-memory batches (screen) draw afresh.
        data = (
            cast("Stateful", self.batch_source)
            if hasattr(self.batch_source, "state_dict")
            else None
        )
        record = (
            CatalogRecord(self.catalogs, self.cfg, self.rank, self.world_size)
            if self.catalogs
            else None
        )
        return TrainingCheckpoint.of_training(
            rank=self.rank, world_size=self.world_size, refiner=self.refiner, disc=self.disc,
            buffer=self.buffer, loop=self.state, data=data, catalogs=record,
        )  # fmt: skip

    def train(self, after_iteration: StepHook | None = None) -> LoopState:
        """Run Algorithm 1 from the session's state to the end of its schedule."""
        self.state = train(
            self.refiner, self.disc, self.batch_source, self.cfg, self.state, self.buffer,
            after_iteration=after_iteration, stats=self.metrics, rank=self.rank,
        )  # fmt: skip
        return self.state


class NoBatchSource:
    """The batches of a session that never trains (an initial checkpoint): a draw is a bug."""

    def next_synthetic(self) -> torch.Tensor:
        raise RuntimeError("this session has no data: it was built only to be saved")

    next_real = next_synthetic


def save_initial_checkpoint(cfg: Config, directory: str | Path, seed: int = 0) -> Path:
    """A freshly initialised R and D saved the way training saves a checkpoint (rank 0 of 1),
    for benchmarks, scale checks and tests that need a refiner but not a trained one."""
    seeded = cfg.replace(run={"seed": seed})
    session = TrainingSession.build(seeded, batch_source=NoBatchSource())
    directory = Path(directory)
    session.checkpoint().save(directory, cfg)
    return directory
