"""Experiment trackers for `simgan tune`: Weights & Biases and MLflow, through Ray Tune's callbacks.

Both are optional extras (`pip install 'simgan-dist[wandb]'` / `'[mlflow]'`), switched on from
the search file. Credentials never come from it: W&B reads WANDB_API_KEY (or `wandb login`),
MLflow its MLFLOW_TRACKING_* variables, as their own tools do."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from simgan_dist.config.rules import Section, require


def _installed(module: str, section: str, extra: str) -> None:
    require(
        importlib.util.find_spec(module) is not None,
        section,
        f"needs the {module} package: pip install 'simgan-dist[{extra}]'",
        module,
    )


@dataclass(frozen=True)
class WandbSettings(Section):
    """`tune.wandb:` one W&B run per trial, grouped by experiment; off while project is empty."""

    SECTION: ClassVar[str] = "tune.wandb"
    project: str = ""
    entity: str = ""  # team or user (empty: the account's default)
    group: str = ""  # empty: the experiment's name
    # offline: runs are only written to dir, to upload later with `wandb sync DIR/wandb/offline-*`,
    # for clusters without a route out.
    mode: Literal["online", "offline"] = "online"
    # W&B's local files (<dir>/wandb/...); empty: WANDB_DIR, else the working directory of
    # `simgan tune` (made absolute here: Tune's logging actors run in another directory).
    dir: str = ""

    def check(self) -> None:
        if self.project:
            _installed("wandb", "tune.wandb.project", "wandb")

    def callback(self, experiment_name: str) -> Any:
        from ray.air.integrations.wandb import WandbLoggerCallback

        if self.mode == "offline":
            # Ray looks for an API key unless WANDB_MODE says offline (the mode argument alone
            # does not stop it).
            os.environ["WANDB_MODE"] = "offline"
        extra: dict[str, Any] = {"entity": self.entity} if self.entity else {}
        local_dir = self.dir or os.environ.get("WANDB_DIR") or os.getcwd()
        return WandbLoggerCallback(
            project=self.project,
            group=self.group or experiment_name,
            mode=self.mode,
            dir=os.path.abspath(local_dir),
            **extra,
        )


@dataclass(frozen=True)
class MLflowSettings(Section):
    """`tune.mlflow:` one MLflow run per trial in one MLflow experiment; off while tracking_uri
    is empty. E.g. sqlite:///mlflow.db, or http://127.0.0.1:5000 for a tracking server."""

    SECTION: ClassVar[str] = "tune.mlflow"
    tracking_uri: str = ""
    experiment_name: str = ""  # empty: the Tune experiment's name

    def check(self) -> None:
        if self.tracking_uri:
            _installed("mlflow", "tune.mlflow.tracking_uri", "mlflow")

    def callback(self, experiment_name: str) -> Any:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        return MLflowLoggerCallback(
            tracking_uri=self.tracking_uri,
            experiment_name=self.experiment_name or experiment_name,
            save_artifact=False,  # checkpoints stay in the run's own storage
        )


def tracker_callbacks(
    wandb: WandbSettings, mlflow: MLflowSettings, experiment_name: str
) -> list[Any]:
    """Tune callbacks for the trackers switched on (none by default)."""
    callbacks = []
    if wandb.project:
        callbacks.append(wandb.callback(experiment_name))
    if mlflow.tracking_uri:
        callbacks.append(mlflow.callback(experiment_name))
    return callbacks


SearcherName = Literal["random", "optuna"]


def check_searcher(searcher: str, grid_fields: list[str]) -> None:
    """Optuna's TPE samples from distributions; a grid is BasicVariantGenerator's alone."""
    if searcher == "optuna":
        _installed("optuna", "tune.searcher", "optuna")
        require(
            not grid_fields,
            "tune.searcher",
            "optuna cannot search a grid; write these fields as choice",
            grid_fields,
        )
