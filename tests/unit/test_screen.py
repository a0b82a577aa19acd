"""simgan screen: the training loop in one process on the debug preset, refined shards with the
synthetic keys and labels, and the S+U report scored on the validation split."""

from __future__ import annotations

import json

import pytest

from simgan_dist.cli import main
from simgan_dist.data.reader import load_arrays


@pytest.mark.slow  # out of the quick tier
def test_screen_trains_refines_and_scores_on_validation(digit_shards, tmp_path, capsys) -> None:
    out = tmp_path / "screen"
    args = ["screen", "--preset", "debug", "--validation", str(digit_shards["real_train_labeled"]),
            "--out", str(out), "--num-seeds", "2", "--epochs", "1", "--threads", "1",
            "--set", f"data.synthetic={digit_shards['synthetic']}",
            "--set", f"data.real={digit_shards['real']}",
            "--set", "loss.reg_lambda=0.25"]  # fmt: skip
    main(args)
    printed = capsys.readouterr().out
    assert "accuracy on validation digits" in printed and "report:" in printed
    assert "*validation* digits" in (out / "report.md").read_text()
    report = json.loads((out / "report.json").read_text())
    assert report["real_eval"] == str(digit_shards["real_train_labeled"])
    assert report["num_train"] == 400 and report["seeds"] == [0, 1]
    assert report["screen"]["num_images"] == 32 + 16 + 96  # the debug preset's schedule
    assert 0.0 <= report["accuracy"]["refined"]["mean"] <= 1.0
    assert 0.0 <= report["preservation"]["refined"] <= 1.0
    _, syn_metas = load_arrays(str(digit_shards["synthetic"]))
    _, ref_metas = load_arrays(str(out / "refined"))
    assert [m["__key__"] for m in ref_metas] == [m["__key__"] for m in syn_metas]
    assert [m["label"] for m in ref_metas] == [m["label"] for m in syn_metas]
    assert "reg_lambda: 0.25" in (out / "config.yaml").read_text()


def test_screen_on_photographs_with_arms_and_a_split_oracle(photo_shards, tmp_path) -> None:
    out = tmp_path / "photo"
    args = ["screen", "--preset", "debug", "--out", str(out), "--num-seeds", "2",
            "--epochs", "1", "--threads", "1", "--with-oracle",
            "--validation", str(photo_shards / "digits-photo-real-train-labeled"),
            "--randomized", str(photo_shards / "digits-photo-synth-randomized"),
            "--ceiling", str(photo_shards / "digits-photo-ceiling"),
            "--set", f"data.synthetic={photo_shards / 'digits-photo-synth'}",
            "--set", f"data.real={photo_shards / 'digits-photo-real-train'}",
            "--set", "model.image_channels=3", "--set", "model.refiner_noise_channels=2",
            "--set", "loss.diversity_lambda=0.1",
            "--set", "loss.psi=edges", "--set", "data.augment_real=true",
            "--set", "model.disc_hidden_noise=0.2", "--set", "model.disc_dropout=0.1"]  # fmt: skip
    main(args)
    report = json.loads((out / "report.json").read_text())
    # The oracle trains on one half of the validation corpus, every arm is scored on the other.
    oracle_keys = {m["__key__"] for m in load_arrays(report["real_train_labeled"])[1]}
    scored_keys = {m["__key__"] for m in load_arrays(report["real_eval"])[1]}
    assert len(oracle_keys) == len(scored_keys) == 1500 and not oracle_keys & scored_keys
    assert set(report["accuracy"]) == {
        "synthetic", "refined", "randomized", "ceiling", "mixed", "oracle"
    }  # fmt: skip
    assert report["gap_closed"] is not None and "refined_minus_randomized" in report
    assert "mixed_minus_randomized" in report
    refined, _ = load_arrays(str(out / "refined"))
    assert refined.shape[1:] == (28, 28, 3)
