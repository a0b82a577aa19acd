"""`simgan eval` on colour digits with its comparison arms (randomized, ceiling, extra ones): the
paired refined - randomized difference, both preservation judges, realism and a grid per arm."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from simgan_dist.cli import main
from simgan_dist.io.shardio import write_shards

NUM = 50  # images per corpus: one classifier step per epoch, seconds for the whole eval


def _digits(seed: int, labels: np.ndarray, tint: tuple[int, int, int]) -> list[np.ndarray]:
    """Colour 28x28 'digits': a bright class-dependent bar on a tinted, noisy background."""
    rng = np.random.default_rng(seed)
    images = []
    for label in labels:
        img = rng.integers(0, 60, (28, 28, 3)) + np.array(tint)
        img[4 + 2 * label : 8 + 2 * label, 4:24] = 250
        images.append(img.clip(0, 255).astype(np.uint8))
    return images


def _corpus(root: Path, name: str, images: list[np.ndarray], labels, keys) -> str:
    samples = [
        (key, img, None if labels is None else {"label": int(y)})
        for key, img, y in zip(keys, images, labels if labels is not None else keys, strict=True)
    ]
    write_shards(samples, root / name, name, samples_per_shard=25)
    return str(root / name)


@pytest.fixture(scope="module")
def rgb_corpora(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Synthetic digits and three aligned arms (same keys and labels), labeled real eval and
    oracle sets: all 3-channel."""
    root = tmp_path_factory.mktemp("rgb")
    labels = np.arange(NUM) % 10
    keys = [f"s{i:04d}" for i in range(NUM)]
    real_keys = [f"r{i:04d}" for i in range(NUM)]
    return {
        "synthetic": _corpus(root, "synth", _digits(0, labels, (0, 0, 0)), labels, keys),
        "randomized": _corpus(root, "randomized", _digits(1, labels, (90, 20, 140)), labels, keys),
        "ceiling": _corpus(root, "ceiling", _digits(2, labels, (120, 100, 60)), labels, keys),
        "textured": _corpus(root, "textured", _digits(3, labels, (30, 90, 30)), labels, keys),
        "real_eval": _corpus(
            root, "real-eval", _digits(4, labels, (110, 90, 70)), labels, real_keys
        ),
        "real_train_labeled": _corpus(
            root, "real-train", _digits(5, labels, (110, 90, 70)), labels, real_keys
        ),
    }


@pytest.fixture(autouse=True)
def _few_realism_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("simgan_dist.eval.protocol.REALISM_STEPS", 20)


@pytest.mark.slow  # out of the quick tier
def test_eval_on_colour_digits_reports_every_arm(rgb_corpora, tmp_path, capsys) -> None:
    """Refined = the randomized corpus itself, so refined - randomized and mixed - randomized
    are exactly 0 per seed (same weights, same batches) and both randomized-judge figures
    agree."""
    c, out = rgb_corpora, tmp_path / "eval"
    main(["eval", "--synthetic", c["synthetic"], "--refined", c["randomized"],
          "--real-eval", c["real_eval"], "--real-train-labeled", c["real_train_labeled"],
          "--randomized", c["randomized"], "--ceiling", c["ceiling"],
          "--arm", f"textured={c['textured']}",
          "--out", str(out), "--num-seeds", "2", "--epochs", "1"])  # fmt: skip
    printed = capsys.readouterr().out.strip().splitlines()
    report = json.loads((out / "report.json").read_text())
    arms = ["synthetic", "refined", "randomized", "ceiling", "textured", "mixed"]
    assert list(report["arms"]) == arms and report["arms"]["textured"] == c["textured"]
    assert report["arms"]["mixed"] == f"{c['randomized']} + {c['randomized']}"
    assert set(report["accuracy"]) == {*arms, "oracle"}
    assert all(len(a["per_seed"]) == 2 for a in report["accuracy"].values())
    assert report["refined_minus_randomized"]["per_seed"] == [0.0, 0.0]
    assert report["mixed_minus_randomized"]["per_seed"] == [0.0, 0.0]
    assert set(report["arm_minus_synthetic"]) == set(arms[1:]) == set(report["gap_closed_by_arm"])
    pres = report["preservation"]
    assert set(pres) == {"refined", "synthetic", "refined_by_randomized", "randomized", "per_seed"}
    assert pres["refined_by_randomized"] == pres["randomized"]
    # The randomized judge is one classifier trained apart, 6x the arms' epochs; the synthetic
    # judge is the synthetic arm's classifier of each seed.
    assert report["converged_judges"] == {"randomized": 6}
    assert len(pres["per_seed"]["refined_by_randomized"]) == 1
    assert len(pres["per_seed"]["refined"]) == 2
    assert set(report["realism_acc"]) == {f"{a}_vs_real" for a in arms}
    assert report["num_arm_train"] == dict.fromkeys(arms, NUM)
    # One grid per arm (and the real images), a row of 16 colour tiles; grid.png as always.
    assert set(report["grids"]) == {*arms, "real"}
    for name in [*arms, "real"]:
        grid = np.asarray(Image.open(out / f"grid_{name}.png"))
        assert grid.shape == (3 * 32, 3 * (16 * 30 + 2), 3)
    assert np.asarray(Image.open(out / "grid.png")).shape == (3 * 92, 3 * 482, 3)
    # The headline stays one line and names the new arms.
    line = printed[-2]
    assert line.startswith("accuracy on real digits: synthetic")
    assert "randomized" in line and "refined - randomized +0.00" in line and "ceiling" in line
    assert "mixed - randomized +0.00" in line
    assert printed[-1] == f"report: {out / 'report.md'}"
    text = (out / "report.md").read_text()
    assert "Refined minus randomized" in text and "randomized judge" in text
    assert "Mixed minus randomized" in text and "| mixed (half the samples refined" in text
    assert "| randomized (one classifier, 6 epochs) | refined |" in text
    assert "![ceiling](grid_ceiling.png)" in text and "| textured |" in text


def test_arms_that_do_not_match_the_synthetic_samples_are_refused(rgb_corpora, tmp_path) -> None:
    from simgan_dist.eval.protocol import evaluate_digits

    c, out = rgb_corpora, tmp_path / "eval"
    labels = np.arange(NUM) % 10
    keys = [f"s{i:04d}" for i in range(NUM)]
    short = _corpus(tmp_path, "short", _digits(1, labels[:-1], (0, 0, 0)), labels[:-1], keys[:-1])
    relabeled = _corpus(
        tmp_path, "relabeled", _digits(1, labels, (0, 0, 0)), (labels + 1) % 10, keys
    )
    grey = _corpus(
        tmp_path, "grey", [img[..., 0] for img in _digits(4, labels, (0, 0, 0))], labels, keys
    )
    base = (c["synthetic"], c["synthetic"], c["real_eval"], out)
    with pytest.raises(ValueError, match=r"1 of 50 synthetic samples have no randomized copy"):
        evaluate_digits(*base, num_seeds=2, randomized=short)
    with pytest.raises(ValueError, match="50 ceiling samples changed their label"):
        evaluate_digits(*base, num_seeds=2, ceiling=relabeled)
    with pytest.raises(ValueError, match="that name is taken"):
        evaluate_digits(*base, num_seeds=2, arms={"oracle": c["ceiling"]})
    with pytest.raises(ValueError, match="that name is taken"):
        evaluate_digits(*base, num_seeds=2, arms={"mixed": c["ceiling"]})
    with pytest.raises(ValueError, match="lowercase letters"):
        evaluate_digits(*base, num_seeds=2, arms={"My Arm": c["ceiling"]})
    # A grey real eval set beside colour arms: one line naming both, before any training.
    with pytest.raises(ValueError, match=r"grey holds 1-channel 28x28 images, \S*synth 3-chan"):
        evaluate_digits(c["synthetic"], c["synthetic"], grey, out, num_seeds=2)
    # A grey refined corpus beside a colour randomized one: the same line, before the mixed arm.
    with pytest.raises(
        ValueError, match=r"randomized holds 3-channel 28x28 images, \S*grey 1-chan"
    ):
        evaluate_digits(c["synthetic"], grey, c["real_eval"], out, num_seeds=2,
                        randomized=c["randomized"])  # fmt: skip


def test_the_mixed_arm_takes_half_the_samples_refined_and_half_randomized() -> None:
    import torch

    from simgan_dist.eval.arms import Arm, mixed_arm, takes_refined

    keys = [f"synth-{i:07d}" for i in range(400)]
    labels = torch.arange(400) % 10
    refined = torch.full((400, 3, 4, 4), 0.5)
    randomized = torch.full((400, 3, 4, 4), -0.5)
    arm = mixed_arm(
        Arm("refined", "r", refined, refined, labels),
        Arm("randomized", "d", randomized, randomized, labels),
        keys,
        labels,
    )
    picked = [takes_refined(k) for k in keys]
    assert 160 < sum(picked) < 240  # about half, by the key alone
    assert [takes_refined(k) for k in keys] == picked  # the same keys every time
    assert torch.equal(arm.first[:, 0, 0, 0] > 0, torch.tensor(picked))
    assert arm.train_x is arm.first and torch.equal(arm.train_y, labels)
    assert arm.name == "mixed" and arm.location == "r + d"


def test_digit_classifier_takes_the_datas_channel_count() -> None:
    import torch

    from simgan_dist.eval.classifier import DigitClassifier, train_classifier

    assert DigitClassifier().features[0].in_channels == 1  # the grey default is unchanged
    x, y = torch.rand(8, 3, 28, 28) * 2 - 1, torch.arange(8) % 10
    model = train_classifier(x, y, seed=0, num_steps=1)
    assert model.features[0].in_channels == 3 and model(x).shape == (8, 10)


def test_colour_grids_and_tensorboard_images_keep_their_colours(tmp_path) -> None:
    """Training writes grid_array's array to grids/ and TensorBoard (train/hooks.py)."""
    import io

    import torch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from simgan_dist.eval.grids import PAD, grid_array, save_grid
    from simgan_dist.train.run_log import RunLog

    red = torch.full((2, 3, 28, 28), -1.0)
    red[:, 0] = 1.0
    grid = grid_array([red, -red], scale=1)
    assert grid.shape == (2 * 30 + PAD, 2 * 30 + PAD, 3)
    assert tuple(grid[PAD, PAD]) == (255, 0, 0) and tuple(grid[30 + PAD, PAD]) == (0, 255, 255)
    assert np.array_equal(np.asarray(Image.open(save_grid(grid, tmp_path / "g.png"))), grid)
    log = RunLog(tmp_path / "run")
    log.image("grid synthetic | refined | real", grid, cur_nimg=64)
    log.close()
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    (image,) = events.Images("grid synthetic | refined | real")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(image.encoded_image_string))), grid)
