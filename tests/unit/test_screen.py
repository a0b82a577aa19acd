"""simgan screen: the training loop in one process on the debug preset, refined shards with the
synthetic keys and labels, and the S+U report scored on the validation split."""

from __future__ import annotations

import json

from simgan_dist.cli import main
from simgan_dist.data.reader import load_arrays


def test_screen_trains_refines_and_scores_on_validation(digit_shards, tmp_path, capsys) -> None:
    out = tmp_path / "screen"
    args = ["screen", "--preset", "debug", "--validation", str(digit_shards["real_train_labeled"]),
            "--out", str(out), "--num-seeds", "2", "--epochs", "1", "--threads", "1",
            "--set", f"data.synthetic={digit_shards['synthetic']}",
            "--set", f"data.real={digit_shards['real']}",
            "--set", "model.refiner_max_warp=1.5", "--set", "loss.flow_lambda=0.01"]  # fmt: skip
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
    assert "refiner_max_warp: 1.5" in (out / "config.yaml").read_text()
