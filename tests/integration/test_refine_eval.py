"""Refine and eval on real shards: keys and annotations kept, lineage added, reruns skip done work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simgan_dist.cli import main
from simgan_dist.data.reader import read_samples
from simgan_dist.io.shardio import read_manifest, resolve_shard_urls


def _samples(location: Path) -> dict[str, dict]:
    return {key: meta for key, _, meta, _ in read_samples(resolve_shard_urls(str(location)))}


@pytest.mark.ray
def test_refine_keeps_keys_and_annotations(
    ray_local, checkpoint, digit_shards, tmp_path, capsys
) -> None:
    out = tmp_path / "refined"
    main(
        [
            "refine",
            "--checkpoint",
            str(checkpoint.parent),
            "--input",
            str(digit_shards["synthetic"]),
            "--output",
            str(out),
            "--batch-size",
            "64",
        ]
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_images"] == 400 and summary["num_shards"] == 4
    source, refined = _samples(digit_shards["synthetic"]), _samples(out)
    assert refined.keys() == source.keys()
    for key, meta in refined.items():
        lineage = meta.pop("lineage")
        assert lineage["source_shard"].endswith(".tar")
        assert lineage["checkpoint_id"] == checkpoint.name
        assert len(lineage["checkpoint_sha256"]) == 64
        original = {k: v for k, v in source[key].items() if not k.startswith("__")}
        assert {k: v for k, v in meta.items() if not k.startswith("__")} == original
    manifest = read_manifest(out)
    assert [s.name for s in manifest.shards] == [
        s.name for s in read_manifest(digit_shards["synthetic"]).shards
    ]
    assert main(["shards", "verify", str(out)]) is None


@pytest.mark.ray
def test_refine_rerun_skips_published_shards(
    ray_local, checkpoint, digit_shards, tmp_path, capsys
) -> None:
    out = tmp_path / "refined"
    args = [
        "refine",
        "--checkpoint",
        str(checkpoint),
        "--input",
        str(digit_shards["synthetic"]),
        "--output",
        str(out),
    ]
    main(args)
    capsys.readouterr()
    first = sorted(out.glob("*.tar"))
    first[-1].unlink()  # as if the run had stopped before its last shard
    mtimes = {p.name: p.stat().st_mtime_ns for p in first[:-1]}
    main(args)
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_shards_skipped_already_done"] == 3
    assert {p.name: p.stat().st_mtime_ns for p in sorted(out.glob("*.tar"))[:-1]} == mtimes
    assert len(_samples(out)) == 400


@pytest.mark.ray
def test_eval_reports_both_accuracies(ray_local, checkpoint, digit_shards, tmp_path) -> None:
    from simgan_dist.eval.protocol import evaluate_digits
    from simgan_dist.refine.ray_pool import refine_shards

    refined = tmp_path / "refined"
    refine_shards(checkpoint, str(digit_shards["synthetic"]), refined, progress=False)
    report = evaluate_digits(
        str(digit_shards["synthetic"]),
        str(refined),
        str(digit_shards["real_eval"]),
        tmp_path / "eval",
        real_train_labeled=str(digit_shards["real_train_labeled"]),
        epochs=1,
        num_seeds=2,
    )
    acc = report["accuracy"]
    assert set(acc) == {"synthetic", "refined", "oracle"}
    assert all(len(arm["per_seed"]) == 2 for arm in acc.values())
    assert report["num_train"] == 400 and report["num_real_eval"] == 2000
    assert report["num_oracle_train"] == 3000
    # 400 synthetic digits are enough to beat chance (10%) on real ones.
    assert acc["synthetic"]["mean"] > 0.2
    assert report["gap_closed"] is None or "mean" in report["gap_closed"]
    text = (tmp_path / "eval" / "report.md").read_text()
    assert "synthetic" in text and "refined" in text and "grid.png" in text
    assert (tmp_path / "eval" / "grid.png").exists()
    assert json.loads((tmp_path / "eval" / "report.json").read_text()) == report
