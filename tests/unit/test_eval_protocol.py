"""The S+U protocol's statistics: paired t-intervals, gap closed, equal steps, and a full report."""

from __future__ import annotations

import json
import math

import pytest
import torch

from simgan_dist.eval.classifier import steps_for_epochs, train_classifier
from simgan_dist.eval.paired import gap_closed, mean_interval, paired_difference


def test_paired_difference_matches_a_hand_computed_t_interval() -> None:
    first = [0.80, 0.82, 0.84, 0.81, 0.83]
    second = [0.83, 0.86, 0.86, 0.85, 0.85]
    diff = paired_difference(first, second)
    diffs = [0.03, 0.04, 0.02, 0.04, 0.02]
    mean = sum(diffs) / 5
    std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 4)
    half = 2.7764451051977987 * std / math.sqrt(5)  # t(0.975, 4 dof)
    assert diff.per_seed == pytest.approx(diffs)
    assert diff.mean == pytest.approx(mean)
    assert (diff.low, diff.high) == pytest.approx((mean - half, mean + half))
    # Pairing matters: the unpaired spreads are far wider than the paired one.
    assert mean_interval(second)["high"] - mean_interval(second)["low"] > diff.high - diff.low


def test_paired_difference_refuses_unpaired_or_single_seeds() -> None:
    with pytest.raises(ValueError, match="differ in seeds"):
        paired_difference([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="at least 2"):
        paired_difference([0.1], [0.2])


def test_gap_closed_scales_the_paired_interval_by_the_gap() -> None:
    diff = paired_difference([0.80, 0.81, 0.79], [0.85, 0.86, 0.84])
    gap = gap_closed(0.80, 0.85, 0.90, diff)
    assert gap is not None
    assert gap["mean"] == pytest.approx(0.5)
    assert gap["low"] == pytest.approx(diff.low / 0.10)
    assert gap["gap_points"] == pytest.approx(10.0)
    assert gap_closed(0.90, 0.85, 0.90, diff) is None


def test_classifier_trains_for_exactly_the_steps_asked() -> None:
    x, y = torch.randn(300, 1, 28, 28), torch.randint(0, 10, (300,))
    assert steps_for_epochs(300, 2, batch_size=128) == 6
    calls = []
    hook = torch.optim.Adam.step

    def counting(self, *a, **k):
        calls.append(1)
        return hook(self, *a, **k)

    torch.optim.Adam.step = counting  # type: ignore[method-assign]
    try:
        train_classifier(x, y, seed=0, num_steps=7)  # 3 batches a pass: 2 passes and 1 batch
    finally:
        torch.optim.Adam.step = hook  # type: ignore[method-assign]
    assert len(calls) == 7


@pytest.mark.slow  # out of the quick tier
def test_report_of_an_identity_refiner_shows_zero_difference(digit_shards, tmp_path) -> None:
    """Refined == synthetic: seed i of both arms trains the same weights on the same batches, so
    every paired difference is exactly 0 and preservation equals the synthetic reference."""
    from simgan_dist.eval.protocol import evaluate_digits

    synthetic = str(digit_shards["synthetic"])
    report = evaluate_digits(
        synthetic,
        synthetic,
        str(digit_shards["real_eval"]),
        tmp_path / "eval",
        real_train_labeled=str(digit_shards["real_train_labeled"]),
        epochs=1,
        num_seeds=2,
    )
    assert report["refined_minus_synthetic"]["per_seed"] == [0.0, 0.0]
    assert report["preservation"]["refined"] == report["preservation"]["synthetic"]
    assert report["num_steps"] == 4 and report["num_oracle_train"] == 3000
    # The oracle trains as many steps on 3,000 labeled real digits; it beats 400 synthetic ones.
    assert report["accuracy"]["oracle"]["mean"] > report["accuracy"]["synthetic"]["mean"]
    assert set(report["realism_acc"]) == {"synthetic_vs_real", "refined_vs_real"}
    assert json.loads((tmp_path / "eval" / "report.json").read_text()) == report
    text = (tmp_path / "eval" / "report.md").read_text()
    assert "oracle" in text and "Gap closed" in text and "preservation" in text
