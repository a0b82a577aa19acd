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

import pytest

from simgan_dist.cli import main
from simgan_dist.config import load_config
from simgan_dist.train.checkpoint import find_latest_checkpoint
from simgan_dist.tune.search import TRIALS_DIR, run_and_report, start_search
from simgan_dist.tune.space import load_search


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


def _assert_viewable_in_tensorboard(experiment: Path) -> None:
    """`tensorboard --logdir EXPERIMENT`: Tune's own events per trial (objective over images)
    beside each trial's training run events under trials/<id>/tensorboard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tune_dirs = {p.parent for p in experiment.glob("tune_trial_*/events.out.tfevents.*")}
    run_dirs = {p.parent for p in experiment.glob(f"{TRIALS_DIR}/*/tensorboard/events.*")}
    assert len(tune_dirs) == 4 and len(run_dirs) == 4
    for directory in tune_dirs:
        events = EventAccumulator(str(directory))
        events.Reload()
        assert "ray/tune/objective" in events.Tags()["scalars"]


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
    _assert_viewable_in_tensorboard(out)

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
