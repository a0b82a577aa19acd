"""`simgan tune`: a real 4-trial search on local Ray (ASHA, Ctrl-C, --resume, best config), and
the results writer on made-up trials."""

from __future__ import annotations

import csv
import json
import os
import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from simgan_dist.cli import main
from simgan_dist.config import ConfigError, load_config
from simgan_dist.train.checkpoint import find_latest_checkpoint
from simgan_dist.tune.results import best_row, trial_rows, write_results
from simgan_dist.tune.search import TRIALS_DIR, run_and_report, start_search
from simgan_dist.tune.space import load_search, parse_search


def _interrupt_at_first_checkpoint(experiment: Path, done: threading.Event) -> threading.Thread:
    """Ctrl-C for the search once the first trial's training run has registered a checkpoint
    (Ray Train then writes its snapshot): that trial has a run to continue. Never fires once
    `done` is set."""

    def watch() -> None:
        while not done.wait(0.25):
            if list(experiment.glob(f"{TRIALS_DIR}/*/checkpoint_manager_snapshot.json")):
                os.kill(os.getpid(), signal.SIGINT)  # Tune's handler saves and stops
                return

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.ray
def test_search_stops_early_resumes_and_best_config_trains(
    ray_local, debug_overrides, tmp_path: Path
) -> None:
    """The bundled debug search: 4 trials of 2 DeepSpeed workers each, one at a time. The grid
    puts refiner_lr 0.01 first and 0.0001 (which barely moves R off its random start) second,
    so ASHA has a clearly better trial on record when the weak ones reach its rung."""
    started = time.monotonic()
    cfg = load_config(preset="debug", overrides=debug_overrides())
    exp = start_search(cfg, load_search("debug", cfg))
    done = threading.Event()
    _interrupt_at_first_checkpoint(Path(exp.location), done)
    try:
        first = run_and_report(exp)
    finally:
        done.set()
    assert first["interrupted"], first

    main(["tune", "--resume", exp.location])
    out = Path(exp.location)
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert len(rows) == 4
    statuses = [r["status"] for r in rows]
    assert "error" not in statuses, rows
    assert statuses.count("completed") >= 1 and statuses.count("stopped early") >= 1, rows
    assert all(float(r["kimg"]) * 1000 < 144 for r in rows if r["status"] == "stopped early")
    assert all(r["objective"] for r in rows)
    assert (out / "objective.png").stat().st_size > 0
    assert "(best)" in (out / "trials.md").read_text()

    # The interrupted trial kept its id and continued its own training run from a checkpoint.
    runs = sorted((out / TRIALS_DIR).iterdir())
    assert len(runs) == 4
    events = [
        json.loads(line).get("event")
        for run in runs
        for line in (run / "metrics.jsonl").read_text().splitlines()
    ]
    assert "resumed" in events

    # The best config trains as it is.
    best = load_config(out / "best-config.yaml")
    assert best.optim.refiner_lr == 0.01 and best.run.name == ""
    main(["train", "--config", str(out / "best-config.yaml"), "--set", "run.name=best"])
    assert find_latest_checkpoint(tmp_path / "best").name == "checkpoint-000000000144"
    print(f"tune test: {time.monotonic() - started:.0f} s")


def test_tune_needs_scores_and_a_new_name(debug_overrides, tmp_path: Path) -> None:
    cfg = load_config(preset="debug", overrides=debug_overrides())
    no_scores = parse_search({"space": {"loss.reg_lambda": {"choice": [0.1, 1.0]}}}, cfg)
    with pytest.raises(ConfigError, match=r"score\.every_nimg: must be > 0 for simgan tune"):
        start_search(cfg, no_scores)
    search = parse_search(
        {"space": {"loss.reg_lambda": {"choice": [0.1]}, "score.every_nimg": 32},
         "tune": {"name": "mine"}},
        cfg,
    )  # fmt: skip
    exp = start_search(cfg, search)
    assert exp.base.score.every_nimg == 32  # fixed values are part of the base config
    assert Path(exp.location) == tmp_path / "mine"
    with pytest.raises(ConfigError, match=r"tune\.name: .* already holds a search"):
        start_search(cfg, search)


def _result(trial: str, lr: float, curve: list[tuple[int, float]], error: bool = False):
    frame = pd.DataFrame(
        {"cur_nimg": [n for n, _ in curve], "objective": [v for _, v in curve]}
        | {"realism_acc": [0.7] * len(curve), "fidelity_l1": [0.1] * len(curve)}
    )
    return SimpleNamespace(
        metrics={"trial_id": trial, "cur_nimg": curve[-1][0]},
        metrics_dataframe=frame,
        error=RuntimeError("boom") if error else None,
        config={"optim.refiner_lr": lr, "loss.reg_lambda": 0.5},
        path=f"/x/{trial}",
    )


def test_results_table_plot_and_best_config(tmp_path: Path) -> None:
    base = load_config(preset="debug")
    search = parse_search(
        {"space": {"optim.refiner_lr": {"loguniform": [1e-4, 1e-2]}, "score.every_nimg": 32}},
        base,
    )
    results = [
        _result("a", 0.01, [(32, -0.5), (96, -0.2), (144, 0.1)]),
        _result("b", 0.001, [(32, -0.4), (96, 0.3)]),  # best so far, but stopped at 96
        _result("c", 0.0001, [(32, -0.9)], error=True),
    ]
    rows = trial_rows(results, search, schedule_nimg=144)
    assert [r.status for r in rows] == ["completed", "stopped early", "error"]
    assert best_row(rows).trial == "a"  # the best among trials that ran the whole schedule
    summary = write_results(rows, search, base, tmp_path)
    table = (tmp_path / "trials.md").read_text().splitlines()
    assert table[0] == (
        "| trial | status | kimg | optim.refiner_lr | objective | realism_acc | fidelity_l1 |"
    )
    assert table[2].startswith("| **a** (best) | completed | 0.144 | 0.01 | 0.1 |")
    assert (tmp_path / "objective.png").read_bytes()[:4] == b"\x89PNG"
    best = load_config(summary["best_config"])
    assert best.optim.refiner_lr == 0.01 and best.score.every_nimg == 32
    assert rows[1].curve == [(32, -0.4), (96, 0.3)]
    interrupted = trial_rows(results, search, schedule_nimg=144, interrupted=True)
    assert interrupted[1].status == "stopped early or unfinished"
