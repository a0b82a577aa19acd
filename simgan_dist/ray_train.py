"""Ray Train glue: the per-worker training function (DeepSpeed R and D) and the TorchTrainer launcher."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch

from simgan_dist import dist
from simgan_dist.checkpoint import checkpoint_name, load_training_state, save_training_state
from simgan_dist.config import Config, from_dict
from simgan_dist.data import StreamStats, batch_stream
from simgan_dist.engine import DeepSpeedUpdater, Updater, make_optimizer
from simgan_dist.grids import save_grid
from simgan_dist.history import HistoryBuffer
from simgan_dist.networks import build_discriminator, build_refiner
from simgan_dist.run_log import MetricAverager, RunLog
from simgan_dist.shardio import resolve_shard_urls
from simgan_dist.train_loop import Batches, IteratorBatches, LoopState, Phase, train

log = logging.getLogger(__name__)
NUM_GRID_IMAGES = 16


def _crossed(prev_nimg: int, cur_nimg: int, every: int) -> bool:
    return cur_nimg // every > prev_nimg // every


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
    cfg: Config,
    rank: int,
    world_size: int,
    state: LoopState,
    stats: StreamStats,
    device: torch.device,
) -> Batches:
    """Infinite synthetic and real streams for this rank. The stream seed moves with the
    iteration counter so a resumed run draws new batches instead of replaying the first ones."""
    seed = cfg.run.seed * 1_000_003 + state.cur_iter
    by_rows = cfg.data.rank_split == "batch_rows"
    stream_rank, stream_world = (0, 1) if by_rows else (rank, world_size)
    batch = cfg.schedule.batch_size if by_rows else cfg.schedule.batch_size // world_size

    def stream(location: str, offset: int) -> Any:
        urls = resolve_shard_urls(location, allow_pipe=cfg.data.allow_pipe_urls)
        it = batch_stream(
            urls,
            batch,
            image_shape(cfg),
            seed=seed + offset,
            rank=stream_rank,
            world_size=stream_world,
            shuffle_buffer=cfg.data.shuffle_buffer,
            num_loader_workers=cfg.data.num_loader_workers,
            on_bad_sample=cfg.data.on_bad_sample,
            with_meta=False,
            stats=stats,
        )
        return RowSlices(it, rank, world_size) if by_rows else it

    return IteratorBatches(stream(cfg.data.synthetic, 0), stream(cfg.data.real, 1), device)


class TrainingHooks:
    """After each iteration: metric averages, console/JSONL/TensorBoard lines and grids on rank 0,
    and checkpoints reported to Ray Train by every rank (report is a barrier)."""

    def __init__(
        self,
        cfg: Config,
        run_dir: Path,
        rank: int,
        world_size: int,
        refiner: Updater,
        disc: Updater,
        buffer: HistoryBuffer | None,
        batches: Batches,
        stats: StreamStats,
        start_nimg: int,
    ) -> None:
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.refiner, self.disc, self.buffer = refiner, disc, buffer
        self.stats = stats
        self.run_dir = run_dir
        self.log = RunLog(run_dir, enabled=rank == 0)
        self.averager = MetricAverager()
        self.prev_nimg = start_nimg
        self.last_checkpoint_nimg = start_nimg
        self.last_metrics: dict[str, float] = {}
        # Fixed images so grids are comparable across the run.
        self.grid_synthetic = batches.next_synthetic()[:NUM_GRID_IMAGES].clone()
        self.grid_real = batches.next_real()[:NUM_GRID_IMAGES].clone()

    def __call__(self, state: LoopState, phase: Phase, metrics: dict[str, float]) -> None:
        self.averager.add(metrics)
        run = self.cfg.run
        if _crossed(self.prev_nimg, state.cur_nimg, run.log_every_nimg):
            self.write_metrics(state, phase.name)
        if _crossed(self.prev_nimg, state.cur_nimg, run.grid_every_nimg):
            self.save_grid(state)
        if _crossed(self.prev_nimg, state.cur_nimg, run.checkpoint_every_nimg):
            self.checkpoint(state)
        self.prev_nimg = state.cur_nimg

    def write_metrics(self, state: LoopState, phase_name: str) -> None:
        means = self.averager.pop()
        means["num_skipped_samples"] = float(self.stats.num_skipped)
        means = dist.mean_over_ranks(means)
        means["num_skipped_samples"] *= self.world_size  # a total, not a mean
        self.last_metrics = self.log.write(state.cur_nimg, phase_name, means)

    def save_grid(self, state: LoopState) -> None:
        if self.rank != 0:
            return
        with torch.no_grad():
            refined = self.refiner.module(self.grid_synthetic)
        save_grid(
            [self.grid_synthetic, refined, self.grid_real],
            self.run_dir / "grids" / f"grid-{state.cur_nimg:012d}.png",
            scale=3,
        )

    def checkpoint(self, state: LoopState) -> None:
        metrics = {"cur_nimg": state.cur_nimg, **self.last_metrics}
        with tempfile.TemporaryDirectory(prefix="simgan-ckpt-") as tmp:
            save_training_state(
                tmp,
                rank=self.rank,
                world_size=self.world_size,
                refiner=self.refiner,
                disc=self.disc,
                buffer=self.buffer,
                state=state,
                cfg=self.cfg,
            )
            dist.barrier()
            ray.train.report(
                metrics,
                checkpoint=ray.train.Checkpoint.from_directory(tmp),
                checkpoint_dir_name=checkpoint_name(state.cur_nimg),
            )
        self.last_checkpoint_nimg = state.cur_nimg

    def finish(self, state: LoopState) -> None:
        if self.averager.sums:
            self.write_metrics(state, "done")
        self.save_grid(state)
        if state.cur_nimg != self.last_checkpoint_nimg:
            self.checkpoint(state)
        self.log.close()


def train_worker(loop_config: dict[str, Any]) -> None:
    """Runs in every Ray Train worker; the process group (gloo or NCCL) is already set up."""
    cfg = from_dict(loop_config["config"], source="<train_loop_config>")
    run_dir = Path(loop_config["run_dir"])
    torch.set_num_threads(cfg.run.threads_per_worker)
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device() if cfg.run.use_gpu else torch.device("cpu")

    torch.manual_seed(cfg.run.seed)  # same initial weights on every rank
    refiner_net = build_refiner(cfg.model).to(device)
    disc_net = build_discriminator(cfg.model).to(device)
    local_batch = cfg.schedule.batch_size // world_size
    refiner = DeepSpeedUpdater(
        refiner_net,
        make_optimizer(refiner_net.parameters(), cfg.optim, cfg.optim.refiner_lr),
        local_batch,
    )
    disc = DeepSpeedUpdater(
        disc_net,
        make_optimizer(disc_net.parameters(), cfg.optim, cfg.optim.disc_lr),
        2 * local_batch,
    )
    buffer = None
    if cfg.schedule.history_fraction > 0 and cfg.schedule.buffer_size > 0:
        # One slice of B / world_size per rank (sampled locally; see DESIGN.md section 2).
        buffer = HistoryBuffer(
            max(1, cfg.schedule.buffer_size // world_size),
            image_shape(cfg),
            seed=cfg.run.seed * 7919 + rank,
        )

    state = LoopState()
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = load_training_state(
                directory, rank=rank, refiner=refiner, disc=disc, buffer=buffer
            )
        if rank == 0:
            print(f"[simgan] resumed at kimg {state.cur_nimg / 1000:.1f}", flush=True)

    stats = StreamStats()
    batches = make_batches(cfg, rank, world_size, state, stats, device)
    hooks = TrainingHooks(
        cfg, run_dir, rank, world_size, refiner, disc, buffer, batches, stats, state.cur_nimg
    )
    state = train(refiner, disc, batches, cfg, state, buffer, after_iteration=hooks)
    hooks.finish(state)


def ensure_ray(num_cpus: int | None = None) -> None:
    """Join RAY_ADDRESS's cluster when set (e.g. under `ray job submit`), else start a local Ray."""
    if not ray.is_initialized():
        ray.init(num_cpus=num_cpus)


def run_training(cfg: Config, run_dir: Path) -> ray.train.Result:
    """Fit a TorchTrainer with cfg.run.num_workers workers; rerunning the same run_dir resumes
    from its latest checkpoint (Ray Train V2 has no Trainer.restore)."""
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ensure_ray()
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"config": cfg.to_dict(), "run_dir": str(run_dir)},
        scaling_config=ScalingConfig(
            num_workers=cfg.run.num_workers,
            use_gpu=cfg.run.use_gpu,
            resources_per_worker={"CPU": cfg.run.threads_per_worker},
        ),
        run_config=RunConfig(
            name=run_dir.name,
            storage_path=str(run_dir.parent),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.run.keep_checkpoints),
        ),
    )
    return trainer.fit()
