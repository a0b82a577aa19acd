"""Experiment trackers for `simgan tune` (Weights & Biases and MLflow through Ray Tune's callbacks,
switched on from the search file; settings in config/trackers.py) and the searcher's checks."""

from __future__ import annotations

import os
from typing import Any, Literal

from simgan_dist.config.rules import require
from simgan_dist.config.trackers import TuneMLflow, TuneWandb, require_installed


def wandb_callback(settings: TuneWandb, experiment_name: str) -> Any:
    from ray.air.integrations.wandb import WandbLoggerCallback

    if settings.mode == "offline":
        # Ray looks for an API key unless WANDB_MODE says offline (the mode argument alone
        # does not stop it).
        os.environ["WANDB_MODE"] = "offline"
    extra: dict[str, Any] = {"entity": settings.entity} if settings.entity else {}
    local_dir = settings.dir or os.environ.get("WANDB_DIR") or os.getcwd()
    return WandbLoggerCallback(
        project=settings.project,
        group=settings.group or experiment_name,
        mode=settings.mode,
        dir=os.path.abspath(local_dir),
        **extra,
    )


def mlflow_callback(settings: TuneMLflow, experiment_name: str) -> Any:
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    return MLflowLoggerCallback(
        tracking_uri=settings.tracking_uri,
        experiment_name=settings.experiment_name or experiment_name,
        save_artifact=False,  # checkpoints stay in the run's own storage
    )


def tracker_callbacks(wandb: TuneWandb, mlflow: TuneMLflow, experiment_name: str) -> list[Any]:
    """Tune callbacks for the trackers switched on (none by default)."""
    callbacks = []
    if wandb.project:
        callbacks.append(wandb_callback(wandb, experiment_name))
    if mlflow.tracking_uri:
        callbacks.append(mlflow_callback(mlflow, experiment_name))
    return callbacks


SearcherName = Literal["random", "optuna"]


def check_searcher(searcher: str, grid_fields: list[str]) -> None:
    """Optuna's TPE samples from distributions; a grid is BasicVariantGenerator's alone."""
    if searcher == "optuna":
        require_installed("optuna", "tune.searcher", "optuna")
        require(
            not grid_fields,
            "tune.searcher",
            "optuna cannot search a grid; write these fields as choice",
            grid_fields,
        )
