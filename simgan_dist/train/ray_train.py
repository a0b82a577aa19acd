"""Ray Train glue: the per-worker training function (DeepSpeed R and D) and the TorchTrainer launcher."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch

from simgan_dist.config import Config, from_dict
from simgan_dist.config.verbosity import third_party_verbose
from simgan_dist.data.reader import StreamStats
from simgan_dist.data.streams import KeyLog, image_shape, make_batches
from simgan_dist.io import storage
from simgan_dist.model.history import HistoryBuffer
from simgan_dist.model.networks import build_discriminator, build_refiner
from simgan_dist.train import dist
from simgan_dist.train.checkpoint import TrainingCheckpoint
from simgan_dist.train.engine import DeepSpeedUpdater, make_lr_schedule, make_optimizer
from simgan_dist.train.global_history import GlobalHistoryBuffer
from simgan_dist.train.hooks import TrainingHooks
from simgan_dist.train.loop import LoopState, optimizer_steps, train
from simgan_dist.train.malloc_tuning import tune_malloc
from simgan_dist.train.ray_catalog import connect_catalogs, restore_catalogs, start_catalogs
from simgan_dist.train.ray_start import ensure_ray
from simgan_dist.train.run_outputs import RunOutputs, key_log_name


def make_buffer(
    cfg: Config, rank: int, world_size: int
) -> HistoryBuffer | GlobalHistoryBuffer | None:
    """The paper's buffer on one worker; on W workers one B-slot buffer, sampled globally."""
    if cfg.schedule.history_fraction == 0 or cfg.schedule.buffer_size == 0:
        return None
    if world_size == 1:
        return HistoryBuffer(cfg.schedule.buffer_size, image_shape(cfg), seed=cfg.run.seed)
    return GlobalHistoryBuffer(
        cfg.schedule.buffer_size, image_shape(cfg), cfg.run.seed, rank, world_size,
        dist.all_gather_tensor,
    )  # fmt: skip


def train_worker(loop_config: dict[str, Any]) -> None:
    """Runs in every Ray Train worker; the process group (gloo or NCCL) is already set up."""
    tune_malloc()  # ~10% more images/s with 2 CPU workers (bench train, 2 cores)
    if not third_party_verbose():
        # Ray Train logs each report (the whole metrics dict) at INFO on a logger named by its
        # file path, under the root logger that its worker config sets to INFO.
        logging.getLogger().setLevel(logging.WARNING)
    cfg = from_dict(loop_config["config"], source="<train_loop_config>")
    run_dir = Path(loop_config["run_dir"])
    torch.set_num_threads(cfg.run.threads_per_worker)
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device() if cfg.run.use_gpu else torch.device("cpu")

    torch.manual_seed(cfg.run.seed)  # same initial weights on every rank
    refiner_net = build_refiner(cfg.model).to(device)
    disc_net = build_discriminator(cfg.model).to(device)
    micro_batch = cfg.schedule.batch_size // (world_size * cfg.engine.grad_accum_steps)
    refiner_steps, disc_steps = optimizer_steps(cfg.schedule)
    r_optim = make_optimizer(refiner_net.parameters(), cfg.optim, cfg.optim.refiner_lr)
    d_optim = make_optimizer(disc_net.parameters(), cfg.optim, cfg.optim.disc_lr,
                             kind=cfg.optim.disc_optimizer)  # fmt: skip
    refiner = DeepSpeedUpdater(
        refiner_net, r_optim, micro_batch, cfg.engine,
        make_lr_schedule(r_optim, cfg.optim, refiner_steps),
    )  # fmt: skip
    # D sees real and fake images of a step in one forward: twice the micro-batch.
    disc = DeepSpeedUpdater(
        disc_net, d_optim, 2 * micro_batch, cfg.engine,
        make_lr_schedule(d_optim, cfg.optim, disc_steps), name="discriminator",
    )  # fmt: skip
    buffer = make_buffer(cfg, rank, world_size)
    stats = StreamStats()
    catalogs = connect_catalogs(loop_config.get("catalogs"), cfg, world_size)

    state = LoopState()
    checkpoint = ray.train.get_checkpoint()
    outputs = RunOutputs(cfg, run_dir, rank)
    if checkpoint is not None:
        outputs.restore()
    if checkpoint is None:
        batches = make_batches(cfg, rank, world_size, stats, device, catalogs)
    else:
        with checkpoint.as_directory() as directory:
            # The catalogs' record first: the streams are dealt from it.
            restore_catalogs(directory, catalogs, cfg, rank, world_size)
            batches = make_batches(cfg, rank, world_size, stats, device, catalogs)
            TrainingCheckpoint.of_training(
                rank=rank, world_size=world_size, refiner=refiner, disc=disc, buffer=buffer,
                loop=state, data=batches,
            ).load(directory)  # fmt: skip
    if cfg.data.record_keys:
        path = run_dir / key_log_name(rank)
        batches.synthetic = KeyLog(batches.synthetic, path, start=batches.num_synthetic)

    hooks = TrainingHooks(
        cfg, run_dir, rank, world_size, refiner, disc, buffer, batches, stats, state.cur_nimg,
        report_to_ray, catalogs, outputs,
    )  # fmt: skip
    state = train(
        refiner, disc, batches, cfg, state, buffer, after_iteration=hooks,
        stats=hooks.collector, rank=rank,
    )  # fmt: skip
    hooks.finish(state)


def report_to_ray(
    metrics: dict[str, float],
    checkpoint_dir: str | None = None,
    checkpoint_dir_name: str | None = None,
) -> None:
    """TrainingHooks' reporter: ray.train.report, with the checkpoint directory when there is one."""
    if checkpoint_dir is None:
        ray.train.report(metrics)
    else:
        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(checkpoint_dir),
            checkpoint_dir_name=checkpoint_dir_name,
        )


class TrainingError(RuntimeError):
    """A failed run, as failure_line() puts it: the message a user needs, without Ray's wrapper."""


def failure_line(err: BaseException) -> str:
    """One line for a failed fit(): the workers' own error, not Ray's ~100-line wrapper. When
    ranks fail differently, an error raised by our code (a clear message about the data or the
    losses) is preferred over the crash it caused elsewhere; then the lowest rank."""
    failures = getattr(err, "worker_failures", None) or {}
    if not failures:
        cause = getattr(err, "controller_failure", None) or err
        return f"{type(cause).__name__}: {str(cause).strip().splitlines()[0] if str(cause) else ''}"

    def root(exc: BaseException) -> BaseException:
        return getattr(exc, "cause", None) or exc  # RayTaskError wraps the raised exception

    def ours_first(item: tuple[int, BaseException]) -> tuple[bool, int]:
        return (not type(root(item[1])).__module__.startswith("simgan_dist"), item[0])

    rank, exc = min(failures.items(), key=ours_first)
    cause = root(exc)
    lines = [line for line in str(cause).strip().splitlines() if line.strip()]
    # Ray's own message may lead with a traceback header; the last line holds the exception.
    text = lines[-1] if lines and lines[0].startswith("Traceback") else (lines[0] if lines else "")
    return f"rank {rank}: {type(cause).__name__}: {text}"


def run_training(
    cfg: Config, run_dir: Path, callbacks: list[Any] | None = None
) -> ray.train.Result:
    """Fit a TorchTrainer with cfg.run.num_workers workers, checkpoints under
    run.storage_path/run.name and outputs in run_dir. Rerunning the same run resumes from its
    latest checkpoint (Ray Train V2 has no Trainer.restore). callbacks: Ray Train callbacks,
    e.g. Tune's TuneReportCallback when this run is a Tune trial."""
    from ray.train import (
        CheckpointConfig,
        FailureConfig,
        RunConfig,
        ScalingConfig,
        TrainingFailedError,
    )
    from ray.train.torch import TorchTrainer

    ensure_ray()
    # One filesystem for the run store: fsspec's, with run.storage_options, wrapped for pyarrow.
    filesystem, storage_path = storage.pyarrow_filesystem(
        cfg.run.storage_path, cfg.run.storage_options
    )
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={
            "config": cfg.to_dict(),
            "run_dir": str(run_dir),
            "catalogs": start_catalogs(cfg),
        },
        scaling_config=ScalingConfig(
            num_workers=cfg.run.num_workers,
            use_gpu=cfg.run.use_gpu,
            resources_per_worker={"CPU": cfg.run.threads_per_worker},
        ),
        run_config=RunConfig(
            name=cfg.run.name,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.run.keep_checkpoints),
            failure_config=FailureConfig(max_failures=cfg.run.max_failures),
            callbacks=callbacks,
            # Ray Train's own console lines (worker group starts, every checkpoint report with
            # its whole metrics dict) only with `simgan --verbose`; our lines are not its logs.
            # ray.train.RunConfig is Train V2's at run time; the type stubs name ray.air's.
            logging_config=ray.LoggingConfig(  # type: ignore[call-arg]
                log_level="INFO" if third_party_verbose() else "WARNING"
            ),
        ),
    )
    try:
        result = trainer.fit()
    except TrainingFailedError as err:
        raise TrainingError(failure_line(err)) from err
    if result.error:
        raise TrainingError(failure_line(result.error))
    return result
