"""Ray Train glue: the per-worker training function (DeepSpeed R and D) and the TorchTrainer launcher."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch

from simgan_dist.config import Config, from_dict
from simgan_dist.config.verbosity import third_party_verbose
from simgan_dist.errors import SimganError, kind
from simgan_dist.io.location import Location
from simgan_dist.train import dist, versions
from simgan_dist.train.checkpoint import (
    STATE_FILE,
    CheckpointError,
    complete_checkpoints,
    parse_state,
)
from simgan_dist.train.hooks import TrainingHooks
from simgan_dist.train.malloc_tuning import tune_malloc
from simgan_dist.train.ray_catalog import connect_catalogs, start_catalogs
from simgan_dist.train.ray_metrics import RayMetrics
from simgan_dist.train.ray_start import check_resources, ensure_ray
from simgan_dist.train.ray_trackers import TrainTrackers
from simgan_dist.train.run_outputs import RunOutputs
from simgan_dist.train.runs import run_location, storage_root
from simgan_dist.train.session import TrainingSession


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
    device = ray.train.torch.get_device() if cfg.run.use_gpu else torch.device("cpu")
    outputs = RunOutputs(cfg, run_dir, dist.rank())
    checkpoint = ray.train.get_checkpoint()
    with contextlib.ExitStack() as stack:
        directory = None
        if checkpoint is not None:
            outputs.restore()
            directory = stack.enter_context(checkpoint.as_directory())
        session = TrainingSession.build(
            cfg, device=device, updaters="deepspeed", checkpoint=directory,
            catalogs=connect_catalogs(loop_config.get("catalogs")), key_log_dir=run_dir,
        )  # fmt: skip
    link = RayTrainLink(cfg, run_dir, session.rank)
    try:
        hooks = TrainingHooks(session, run_dir, link, outputs)
        hooks.finish(session.train(after_iteration=hooks))
    finally:
        link.close()


class RayTrainLink:
    """TrainingHooks' link to Ray Train: reports (ray.train.report, a barrier), rank 0's rows
    as Ray metrics and to the trackers (run.wandb, run.mlflow), and drain notices
    (ray.train.get_preemption_info, a barrier)."""

    def __init__(self, cfg: Config, run_dir: Path, rank: int) -> None:
        self.metrics = RayMetrics(cfg.run.name) if rank == 0 else None
        self.trackers = TrainTrackers(cfg, run_dir) if rank == 0 else None

    def report(
        self,
        metrics: dict[str, float],
        checkpoint_dir: str | None = None,
        checkpoint_dir_name: str | None = None,
    ) -> None:
        if checkpoint_dir is None:
            ray.train.report(metrics)
        else:
            ray.train.report(
                metrics,
                checkpoint=ray.train.Checkpoint.from_directory(checkpoint_dir),
                checkpoint_dir_name=checkpoint_dir_name,
            )

    def observe(self, cur_nimg: int, metrics: dict[str, float]) -> None:
        if self.metrics is not None:
            self.metrics(cur_nimg, metrics)
        if self.trackers is not None:
            self.trackers.log(cur_nimg, metrics)

    def close(self) -> None:
        if self.trackers is not None:
            self.trackers.close()

    def draining(self) -> bool:
        return ray.train.get_preemption_info() is not None


class TrainingError(SimganError, RuntimeError):
    """A failed run, as failure_line() puts it: the message a user needs, without Ray's wrapper."""


def failure_line(err: BaseException) -> str:
    """One line for a failed fit(): the workers' own error, not Ray's ~100-line wrapper. When
    ranks fail differently, an error raised by our code (a clear message about the data or the
    losses) is preferred over the crash it caused elsewhere; then the lowest rank."""
    failures = getattr(err, "worker_failures", None) or {}
    if not failures:
        cause = getattr(err, "controller_failure", None) or err
        return f"{kind(cause)}: {str(cause).strip().splitlines()[0] if str(cause) else ''}"

    def root(exc: BaseException) -> BaseException:
        return getattr(exc, "cause", None) or exc  # RayTaskError wraps the raised exception

    def ours_first(item: tuple[int, BaseException]) -> tuple[bool, int]:
        return (not type(root(item[1])).__module__.startswith("simgan_dist"), item[0])

    rank, exc = min(failures.items(), key=ours_first)
    cause = root(exc)
    lines = [line for line in str(cause).strip().splitlines() if line.strip()]
    # Ray's own message may lead with a traceback header; the last line holds the exception.
    text = lines[-1] if lines and lines[0].startswith("Traceback") else (lines[0] if lines else "")
    return f"rank {rank}: {kind(cause)}: {text}"


RAY_RECORD_FILE = "checkpoint_manager_snapshot.json"  # Ray Train V2's list of a run's checkpoints
log = logging.getLogger(__name__)


def _recorded_names(blob: bytes) -> tuple[str | None, set[str]]:
    """(latest, all) checkpoint names in Ray's record; (None, empty) when it does not parse."""
    try:
        record = json.loads(blob)
        names = {r["checkpoint_dir_name"] for r in record["checkpoint_results"]}
        return record["latest_checkpoint_result"]["checkpoint_dir_name"], names
    except (ValueError, KeyError, TypeError):
        return None, set()


def _ray_record(location: Location, checkpoints: list[str]) -> str:
    """Ray's record of a run listing checkpoints (oldest first; the last is the latest)."""
    versions.require(versions.RAY_CHECKPOINT_RECORD)
    from ray.train.v2._internal.execution.checkpoint.checkpoint_manager import (
        _CheckpointManagerState,
        _TrainingResultState,
    )

    results = []
    for name in checkpoints:
        state_location = location.join(name, STATE_FILE)
        meta = parse_state(state_location.read_bytes(), state_location.url)
        metrics = {"cur_nimg": meta["loop"]["cur_nimg"]}
        results.append(_TrainingResultState(checkpoint_dir_name=name, metrics=metrics))
    return _CheckpointManagerState(
        checkpoint_results=results,
        checkpoint_report_indices=list(range(len(results))),
        latest_checkpoint_result=results[-1],
        pending_training_results=[],
        pending_validation_specs=[],
        current_report_index=len(results),
        validated_checkpoint_dir_names=[],
        timed_out_validation_checkpoint_dir_names=[],
        failed_validation_checkpoint_dir_names=[],
    ).json()


def align_checkpoint_record(cfg: Config) -> None:
    """Make Ray Train resume a run from its newest complete checkpoint. Ray resumes from the
    checkpoint its record (RAY_RECORD_FILE) names, and without a readable one starts from 0
    images: its checkpoints then take the old ones' names and its rotation deletes the rest. A
    record that is missing (a copied run), unreadable (0 bytes after a full disk) or that names
    another checkpoint (the newest was cut short) or one that is gone, is rewritten from the
    run's complete checkpoints, with a warning. A run whose checkpoints are all incomplete is
    refused: nothing to resume from, and starting over would overwrite them."""
    location = run_location(cfg)
    names = location.list()
    if not any(name.startswith("checkpoint-") for name in names):
        return
    complete = [c.name for c in complete_checkpoints(location)]
    if not complete:
        raise CheckpointError(
            f"{location}: no complete checkpoint to resume from (each lacks files or has a "
            f"{STATE_FILE} that does not parse); choose another run.name, or remove the run"
        )
    record_location = location.join(RAY_RECORD_FILE)
    blob = record_location.read_bytes() if RAY_RECORD_FILE in names else b""
    latest, recorded = _recorded_names(blob)
    if latest == complete[0] and recorded <= set(complete):
        return
    why = (
        "missing" if RAY_RECORD_FILE not in names
        else "unreadable" if latest is None
        else f"naming {latest}, not the newest complete checkpoint"
    )  # fmt: skip
    log.warning(
        "%s: Ray's checkpoint record (%s) is %s; rewritten to resume from %s",
        location, RAY_RECORD_FILE, why, complete[0],
    )  # fmt: skip
    record_location.write_text(_ray_record(location, complete[::-1]))


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
        ScalingConfig,
        TrainingFailedError,
    )
    from ray.train.torch import TorchConfig, TorchTrainer

    align_checkpoint_record(cfg)  # before Ray starts: a refusal starts nothing
    ensure_ray(connect_wait_s=cfg.run.ray_connect_wait_s)
    gpu = " and 1 GPU" if cfg.run.use_gpu else ""
    # An elastic run starts once min_workers fit; a fixed one needs all of them.
    needed = cfg.run.min_workers if cfg.run.elastic() else cfg.run.num_workers
    check_resources(
        needed,
        {"CPU": cfg.run.threads_per_worker, "GPU": int(cfg.run.use_gpu)},
        f"{'run.min_workers' if cfg.run.elastic() else 'run.num_workers'}={needed} workers of "
        f"run.threads_per_worker={cfg.run.threads_per_worker} CPUs{gpu}",
        cfg.run.resource_wait_s,
    )
    # One filesystem for the run store: fsspec's, with run.storage_options, wrapped for pyarrow.
    filesystem, storage_path = storage_root(cfg).pyarrow_filesystem()
    catalogs = start_catalogs(cfg)  # killed when the run ends (below)
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={
            "config": cfg.to_dict(),
            "run_dir": str(run_dir),
            "catalogs": catalogs,
        },
        torch_config=TorchConfig(timeout_s=cfg.run.collective_timeout_s),
        scaling_config=ScalingConfig(
            # Elastic: a (min, max) tuple (Train V2's elastic policy); the stub types say int.
            num_workers=(cfg.run.min_workers, cfg.run.num_workers)  # type: ignore[arg-type]
            if cfg.run.elastic()
            else cfg.run.num_workers,
            elastic_resize_monitor_interval_s=cfg.run.elastic_resize_every_s,  # type: ignore[call-arg]
            use_gpu=cfg.run.use_gpu,
            resources_per_worker={"CPU": cfg.run.threads_per_worker},
        ),
        # Qualified: config.RunConfig is simgan's run section, this is Ray Train's.
        run_config=ray.train.RunConfig(
            name=cfg.run.name,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.run.keep_checkpoints),
            # Train V2's FailureConfig at run time; the type stubs name ray.air's.
            failure_config=FailureConfig(
                max_failures=cfg.run.max_failures,
                max_preemption_failures=cfg.run.max_preemption_failures,  # type: ignore[call-arg]
            ),
            callbacks=callbacks,
            # Ray Train's own console lines (worker group starts, every checkpoint report with
            # its whole metrics dict) only with `simgan --verbose`; our lines are not its logs.
            # ray.train.RunConfig is Train V2's at run time; the type stubs name ray.air's.
            logging_config=ray.LoggingConfig(
                log_level="INFO" if third_party_verbose() else "WARNING"
            ),
        ),
    )
    try:
        result = trainer.fit()
    except TrainingFailedError as err:
        raise TrainingError(failure_line(err)) from err
    finally:
        for handle in catalogs.values():  # the run's own: a later run in this process opens anew
            ray.kill(handle)
    if result.error:
        raise TrainingError(failure_line(result.error))
    return result
