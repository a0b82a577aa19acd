"""Settings of the experiment trackers, Weights & Biases and MLflow, for `simgan train` (run.wandb,
run.mlflow) and `simgan tune` (tune.wandb, tune.mlflow); the Ray integrations that use them live
in train/ray_trackers.py and tune/trackers.py.

Both are optional extras (`pip install 'simgan-dist[wandb]'` / `'[mlflow]'`). Credentials never
come from a config: W&B reads WANDB_API_KEY (or `wandb login`), MLflow its MLFLOW_TRACKING_*
variables, as their own tools do."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import ClassVar, Literal

from simgan_dist.config.rules import Section, require


def require_installed(module: str, section: str, extra: str) -> None:
    require(
        importlib.util.find_spec(module) is not None,
        section,
        f"needs the {module} package: pip install 'simgan-dist[{extra}]'",
        module,
    )


@dataclass(frozen=True, kw_only=True)
class WandbSettings(Section):
    """A W&B run per training run (per trial under tune), grouped by run or experiment name;
    off while project is empty."""

    SECTION: ClassVar[str] = "wandb"
    project: str = ""
    entity: str = ""  # team or user (empty: the account's default)
    group: str = ""  # empty: the run's (tune: the experiment's) name
    # offline: runs are only written to dir, to upload later with `wandb sync DIR/wandb/offline-*`,
    # for clusters without a route out.
    mode: Literal["online", "offline"] = "online"
    # W&B's local files (<dir>/wandb/...); empty: WANDB_DIR, else the run's local output
    # directory (train) or the working directory of `simgan tune`, made absolute (Ray's workers
    # and logging actors run in another directory).
    dir: str = ""

    def check(self) -> None:
        if self.project:
            require_installed("wandb", f"{self.SECTION}.project", "wandb")


@dataclass(frozen=True, kw_only=True)
class MLflowSettings(Section):
    """An MLflow run per training run (per trial under tune) in one MLflow experiment; off while
    tracking_uri is empty. E.g. sqlite:///mlflow.db, or http://127.0.0.1:5000 for a server."""

    SECTION: ClassVar[str] = "mlflow"
    tracking_uri: str = ""
    experiment_name: str = ""  # empty: the run's (tune: the experiment's) name

    def check(self) -> None:
        if self.tracking_uri:
            require_installed("mlflow", f"{self.SECTION}.tracking_uri", "mlflow")


@dataclass(frozen=True, kw_only=True)
class RunWandb(WandbSettings):
    """`run.wandb:` rank 0 logs every metrics row of `simgan train` to W&B."""

    SECTION: ClassVar[str] = "run.wandb"


@dataclass(frozen=True, kw_only=True)
class RunMLflow(MLflowSettings):
    """`run.mlflow:` rank 0 logs every metrics row of `simgan train` to MLflow."""

    SECTION: ClassVar[str] = "run.mlflow"


@dataclass(frozen=True, kw_only=True)
class TuneWandb(WandbSettings):
    """`tune.wandb:` one W&B run per trial, grouped by experiment."""

    SECTION: ClassVar[str] = "tune.wandb"


@dataclass(frozen=True, kw_only=True)
class TuneMLflow(MLflowSettings):
    """`tune.mlflow:` one MLflow run per trial in one MLflow experiment."""

    SECTION: ClassVar[str] = "tune.mlflow"
