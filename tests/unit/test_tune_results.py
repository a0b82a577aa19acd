"""Search checks and results (table, plot, best config), without Ray."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from simgan_dist.config import ConfigError, load_config
from simgan_dist.tune.results import best_row, trial_rows, write_results
from simgan_dist.tune.search import start_search
from simgan_dist.tune.space import parse_search


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
