"""`simgan bench train`: figures are produced and ratios come from them (speed is not asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from simgan_dist.bench.cpu import ROLES
from simgan_dist.bench.table import format_table
from simgan_dist.bench.train import bench_train, plan, steady_throughput
from simgan_dist.config import ConfigError, load_config


def test_plan_cuts_whole_iterations() -> None:
    cfg = load_config(preset="digits")  # batch 64, K_g 2, K_d 1: 192 images per iteration
    p = plan(cfg, 9600)
    assert p["iter_nimg"] == 192
    assert p["interval_nimg"] % p["iter_nimg"] == 0
    assert p["measured_nimg"] == p["measured_iters"] * 192 >= 9600
    assert plan(cfg, 1)["measured_iters"] == 1


def test_steady_throughput_skips_warmup_and_weights_by_time() -> None:
    rows = [
        {"cur_nimg": 16, "phase": "pretrain_disc", "images_per_s": 1.0, "time": 5.0},
        {"cur_nimg": 40, "phase": "adversarial", "images_per_s": 2.0, "time": 17.0},  # warm-up
        {"cur_nimg": 64, "phase": "adversarial", "images_per_s": 24.0, "time": 18.0},  # 1 s
        {"cur_nimg": 88, "phase": "adversarial", "images_per_s": 8.0, "time": 21.0},  # 3 s
    ]
    got = steady_throughput(rows, warmup_rows=1)
    assert got["measured_nimg"] == 48
    assert got["measured_s"] == pytest.approx(4.0)
    assert got["images_per_s"] == pytest.approx(12.0)  # 48 images / 4 s, not mean(24, 8)
    assert got["window"] == [17.0, 21.0]  # from the warm-up row's end to the last row's
    with pytest.raises(ValueError, match="--nimg"):
        steady_throughput(rows[:2], warmup_rows=1)


def test_rounds_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="--rounds"):
        bench_train(preset="debug", nimg=24, rounds=0, say=lambda _: None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_cuda_is_skipped_with_a_message() -> None:
    result = bench_train(preset="debug", nimg=24, device="cuda", say=lambda _: None)
    assert "no CUDA" in result["skipped"] and not result["results"]
    assert "skipped" in format_table(result)


@pytest.mark.ray
def test_bench_train_debug_reports_three_figures(
    ray_local, digit_shards: dict[str, Path], tmp_path: Path
) -> None:
    result = bench_train(
        preset="debug",
        nimg=48,
        shards=digit_shards["synthetic"].parent,
        work_dir=tmp_path,
        say=lambda _: None,
    )
    ips = {name: r["images_per_s"] for name, r in result["results"].items()}
    assert set(ips) == {"bare", "ours_1w", "ours_2w", "bare_2p"}
    assert all(v > 0 for v in ips.values())
    ratios = result["ratios"]
    assert ratios["ours_1w/bare"]["value"] == pytest.approx(ips["ours_1w"] / ips["bare"])
    assert ratios["ours_2w/ours_1w"]["value"] == pytest.approx(ips["ours_2w"] / ips["ours_1w"])
    # The ceiling: two bare processes on half batches each, summed; no target.
    pair = result["results"]["bare_2p"]
    assert pair["images_per_s"] == pytest.approx(sum(pair["processes_images_per_s"]))
    assert pair["measured_nimg"] == result["config"]["measured_nimg"]
    assert ratios["bare_2p/ours_1w"]["value"] == pytest.approx(ips["bare_2p"] / ips["ours_1w"])
    assert ratios["ours_2w/bare_2p"]["target"] is None
    for key, r in ratios.items():
        if r["target"] is not None:
            assert r["met"] == (r["value"] >= r["target"]), key
    # The Ray runs timed the adversarial rows after warm-up: as many images as the bare loop,
    # in two alternating rounds (the default); the bare loop in one more part than rounds.
    cfg = result["config"]
    assert cfg["rounds"] == 2
    assert cfg["measured_nimg"] == 2 * cfg["measured_nimg_per_run"]
    for name in ("bare", "ours_1w", "ours_2w"):
        figure = result["results"][name]
        assert figure["measured_nimg"] == cfg["measured_nimg"], name
        assert figure["images_per_s"] == pytest.approx(
            figure["measured_nimg"] / figure["measured_s"]
        )
    assert len(result["results"]["ours_1w"]["parts_images_per_s"]) == 2
    assert len(result["results"]["ours_2w"]["run_dirs"]) == 2
    assert len(result["results"]["bare"]["parts_images_per_s"]) == min(3, 2 * cfg["measured_iters"])
    # CPU accounting of each Ray configuration's timed intervals: None when they were shorter
    # than two sampler intervals (likely at this tiny size), else the roles fill the machine.
    for name in ("ours_1w", "ours_2w"):
        cores = result["results"][name]["cpu_cores"]
        if cores is not None:
            assert sum(cores[r] for r in ROLES) == pytest.approx(cores["num_cpus"], rel=0.1)
    table = format_table(result)
    assert "CPU in the timed intervals" in table
    assert "ours_2w/ours_1w" in table and "images/s" in table and "bare_2p/ours_1w" in table
    assert "ours_2w/ours_1w per round: " in table
    json.dumps(result)  # what --out writes
