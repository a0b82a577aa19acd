"""Rank 0's metrics rows of `simgan train` to Weights & Biases and MLflow (run.wandb, run.mlflow),
through Ray's own integrations for training functions (setup_wandb, setup_mlflow).

One tracker run per training run, named and identified by run.name, so a run restarted from its
checkpoint (a failure, a preemption, --resume) continues the same W&B run; each row is logged at
step cur_nimg, the run's clock. The whole resolved config is the run's parameters."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from simgan_dist.config import Config
from simgan_dist.train.run_log import flat_hparams


class TrainTrackers:
    """The trackers run.wandb and run.mlflow switch on (none by default), for rank 0 only."""

    def __init__(self, cfg: Config, run_dir: Path) -> None:
        self.wandb_run: Any = None
        self.mlflow: Any = None
        params = flat_hparams(cfg.to_dict())
        wandb, mlflow = cfg.run.wandb, cfg.run.mlflow
        if wandb.project:
            from ray.air.integrations.wandb import setup_wandb

            if wandb.mode == "offline":
                # Ray looks for an API key unless WANDB_MODE says offline.
                os.environ["WANDB_MODE"] = "offline"
            extra: dict[str, Any] = {"entity": wandb.entity} if wandb.entity else {}
            # Empty dir: WANDB_DIR, else the run's own output directory (a worker's working
            # directory is Ray's, not the user's).
            local_dir = wandb.dir or os.environ.get("WANDB_DIR") or str(run_dir)
            os.makedirs(local_dir, exist_ok=True)
            self.wandb_run = setup_wandb(
                config=params, project=wandb.project, group=wandb.group or cfg.run.name,
                trial_id=cfg.run.name, trial_name=cfg.run.name, mode=wandb.mode,
                dir=os.path.abspath(local_dir), rank_zero_only=False, **extra,
            )  # fmt: skip
        if mlflow.tracking_uri:
            from ray.air.integrations.mlflow import setup_mlflow

            self.mlflow = setup_mlflow(
                config=params, tracking_uri=mlflow.tracking_uri,
                experiment_name=mlflow.experiment_name or cfg.run.name, run_name=cfg.run.name,
                create_experiment_if_not_exists=True, rank_zero_only=False,
            )  # fmt: skip

    def log(self, cur_nimg: int, metrics: dict[str, float]) -> None:
        if self.wandb_run is not None:
            self.wandb_run.log(metrics, step=cur_nimg)
        if self.mlflow is not None:
            self.mlflow.log_metrics(metrics, step=cur_nimg)

    def close(self) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish()
        if self.mlflow is not None:
            self.mlflow.end_run()
