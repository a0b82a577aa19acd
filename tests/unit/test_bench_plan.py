"""`simgan bench train`'s plan, steady throughput and refusals, without Ray."""

from __future__ import annotations

import pytest
import torch

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
