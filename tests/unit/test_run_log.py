"""metrics.jsonl is strict JSON: non-finite values are written as null (issue 18, item 16)."""

from __future__ import annotations

import json

import pytest

from simgan_dist.train.run_log import RunLog


def _refuse_constant(name: str) -> None:
    raise ValueError(f"not JSON: {name}")


def test_non_finite_metrics_are_null_and_every_line_is_strict_json(tmp_path) -> None:
    log = RunLog(tmp_path)
    log.write(64, "adversarial", {"loss_r": float("nan"), "loss_d": float("inf"), "acc": 0.5})
    log.event("resumed", 64)
    log.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line, parse_constant=_refuse_constant) for line in lines]
    assert rows[0]["loss_r"] is None and rows[0]["loss_d"] is None
    assert rows[0]["acc"] == pytest.approx(0.5) and rows[1]["event"] == "resumed"
