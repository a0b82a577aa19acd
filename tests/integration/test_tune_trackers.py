"""`simgan tune` with Optuna's TPE as searcher and W&B (offline) and MLflow (sqlite) attached from
the search file: a real 2-trial search on local Ray; each tracker holds one run per trial."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from simgan_dist.config import ConfigError, load_config
from simgan_dist.tune.search import run_and_report, start_search
from simgan_dist.tune.space import load_search

SPACE = {
    "optim.refiner_lr": {"loguniform": [0.0001, 0.01]},
    "score.every_nimg": 32,
    "score.num_images": 64,
    "score.classifier_steps": 50,
}


def _search_file(tmp_path: Path, **tune: object) -> Path:
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump({"space": SPACE, "tune": tune}))
    return path


@pytest.mark.ray
def test_optuna_searches_and_wandb_and_mlflow_record_every_trial(
    ray_local, debug_overrides, tmp_path: Path
) -> None:
    pytest.importorskip("optuna")  # the extras are in the dev install; a bare install skips
    mlflow = pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    tracking_uri = f"sqlite:///{tmp_path}/mlflow.db"
    search_file = _search_file(
        tmp_path,
        name="tracked",
        num_samples=2,
        max_concurrent_trials=1,
        scheduler="none",
        searcher="optuna",
        wandb={"project": "simgan-test", "mode": "offline", "dir": str(tmp_path)},
        mlflow={"tracking_uri": tracking_uri, "experiment_name": "simgan-test"},
    )
    cfg = load_config(preset="debug", overrides=debug_overrides())
    exp = start_search(cfg, load_search(search_file, cfg))
    summary = run_and_report(exp)
    assert not summary["interrupted"] and summary["num_errors"] == 0, summary

    out = Path(exp.location)
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [r["status"] for r in rows] == ["completed", "completed"]
    assert all(0.0001 <= float(r["optim.refiner_lr"]) <= 0.01 for r in rows)
    assert list(out.glob("searcher-state-*.pkl"))  # Optuna's state (random search has none)

    offline_runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 2 and all(list(r.glob("*.wandb")) for r in offline_runs)

    client = mlflow.tracking.MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("simgan-test")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2 and all("objective" in r.data.metrics for r in runs)
    logged = sorted(float(r.data.params["optim.refiner_lr"]) for r in runs)
    drawn = sorted(float(r["optim.refiner_lr"]) for r in rows)  # trials.csv rounds
    assert logged == pytest.approx(drawn, rel=1e-3)


def test_a_grid_with_optuna_and_an_unknown_tracker_key_name_the_field(tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    cfg = load_config(preset="debug")
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"space": {"loss.reg_lambda": {"grid": [0.1, 1.0]}},
                                    "tune": {"searcher": "optuna"}}))  # fmt: skip
    with pytest.raises(ConfigError, match=r"grid.yaml: tune.searcher: optuna cannot search a grid"):
        load_search(path, cfg)
    key = _search_file(tmp_path, wandb={"project": "p", "api_key": "secret"})
    with pytest.raises(ConfigError, match=r"search.yaml: tune.wandb.api_key: unknown key"):
        load_search(key, cfg)


@pytest.mark.ray
def test_simgan_train_logs_every_metrics_row_to_wandb_and_mlflow(
    ray_local, debug_overrides, tmp_path: Path
) -> None:
    """run.wandb / run.mlflow (issue 29 item 4): rank 0's rows, at step cur_nimg, under the run's
    name, with the resolved config as parameters."""
    mlflow = pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    from simgan_dist.api import train_refiner

    tracking_uri = f"sqlite:///{tmp_path}/mlflow.db"
    overrides = debug_overrides(**{
        "run.name": "tracked", "run.wandb.project": "simgan-test", "run.wandb.mode": "offline",
        "run.wandb.dir": tmp_path, "run.mlflow.tracking_uri": tracking_uri,
    })  # fmt: skip
    cfg = load_config(preset="debug", overrides=overrides)
    run_dir = Path(train_refiner(cfg))
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    steps = [row["cur_nimg"] for row in rows if "loss_r" in row]
    assert steps

    offline_runs = list((tmp_path / "wandb").glob("offline-run-*-tracked"))
    assert len(offline_runs) == 1 and list(offline_runs[0].glob("*.wandb"))

    client = mlflow.tracking.MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("tracked")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "tracked"
    assert run.data.params["optim.refiner_lr"] == str(cfg.optim.refiner_lr)
    history = client.get_metric_history(run.info.run_id, "loss_r")
    assert [m.step for m in history] == steps
