"""Label-free scores: the two-sample classifier, realism, fidelity, and the Scorer on real shards."""

from __future__ import annotations

import pytest
import torch

from simgan_dist.config import ConfigError, load_config
from simgan_dist.eval.scores import Scorer, fidelity_l1, realism, two_sample_accuracy


@pytest.mark.slow  # out of the quick tier
def test_two_sample_accuracy_separates_and_not() -> None:
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(64, 1, 8, 8, generator=generator) * 2 - 1
    b = torch.rand(64, 1, 8, 8, generator=generator) * 2 - 1
    # Same distribution: chance; shifted brightness: easy.
    assert abs(two_sample_accuracy(a, b, steps=60, seed=0) - 0.5) < 0.2
    assert two_sample_accuracy(a, (b + 1.5).clamp(-1, 1), steps=60, seed=0) > 0.9


def test_two_sample_accuracy_is_seeded_and_leaves_global_rng_alone() -> None:
    a, b = torch.zeros(16, 1, 8, 8), torch.ones(16, 1, 8, 8)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = two_sample_accuracy(a, b, steps=5, seed=7)
    assert torch.equal(torch.rand(3), expected)  # training's random stream is untouched
    assert two_sample_accuracy(a, b, steps=5, seed=7) == first


def test_realism_and_fidelity() -> None:
    assert realism(0.5) == 1.0 and realism(0.3) == 1.0  # below chance is noise: chance
    assert realism(1.0) == 0.0 and realism(0.75) == pytest.approx(0.5)
    x = torch.zeros(2, 1, 4, 4)
    assert fidelity_l1(x, x) == 0.0
    assert fidelity_l1(x + 0.25, x) == pytest.approx(0.25)


@pytest.mark.slow  # out of the quick tier
def test_scorer_on_digit_shards(digit_shards) -> None:
    cfg = load_config(
        preset="debug",
        overrides=[
            f"data.synthetic={digit_shards['synthetic']}",
            f"data.real={digit_shards['real']}",
            "score.num_images=32",
            "score.classifier_steps=20",
        ],
    )
    scorer = Scorer.from_config(cfg, torch.device("cpu"))
    assert scorer.synthetic.shape == scorer.real.shape == (32, 1, 28, 28)
    same = scorer(lambda x: x)
    assert same["fidelity_l1"] == 0.0
    assert same["objective"] == pytest.approx(same["realism"])
    blank = scorer(lambda x: torch.full_like(x, -1.0))  # erases the digit: far from its input
    assert blank["fidelity_l1"] > 0.05
    assert blank["objective"] < same["objective"]


@pytest.mark.slow  # out of the quick tier
def test_downstream_objective(digit_shards) -> None:
    cfg = load_config(
        preset="debug",
        overrides=[
            f"data.synthetic={digit_shards['synthetic']}",
            f"data.real={digit_shards['real']}",
            "score.num_images=64",
            "score.classifier_steps=5",
            "score.objective=downstream",
            f"score.real_labeled={digit_shards['real_eval']}",
            "score.downstream_epochs=1",
        ],
    )
    scores = Scorer.from_config(cfg, torch.device("cpu"))(lambda x: x)
    assert 0.0 <= scores["downstream_acc"] <= 1.0
    assert scores["objective"] == scores["downstream_acc"]


def test_score_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="score.every_nimg: must be a multiple of"):
        load_config(preset="debug", overrides=["score.every_nimg=40"])  # log_every_nimg is 32
    with pytest.raises(ConfigError, match="score.real_labeled: must name a labeled real split"):
        load_config(preset="debug", overrides=["score.objective=downstream"])
    with pytest.raises(ConfigError, match="score.objective: downstream needs 1x28x28"):
        load_config(preset="gaze", overrides=["score.objective=downstream", "score.real_labeled=x"])
