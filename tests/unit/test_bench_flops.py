"""bench/flops.py: FLOP counts against a hand count, per-image figures of the built networks,
measured peaks, shares and the datasheet table; the input path's CPU no-op."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from simgan_dist.bench.flops import (
    DATASHEET_TFLOPS,
    account,
    best_peak,
    count_flops,
    datasheet_flops,
    format_flops,
    format_peak,
    measure_peak,
    model_flops,
)
from simgan_dist.config import load_config
from simgan_dist.data.streams import HostToDevice


def test_count_matches_a_hand_count_of_a_tiny_conv_net() -> None:
    n, c_in, c_out, k, h, w, classes = 5, 1, 2, 3, 4, 4, 3
    net = nn.Sequential(
        nn.Conv2d(c_in, c_out, k, padding=k // 2), nn.Flatten(), nn.Linear(c_out * h * w, classes)
    )
    x = torch.rand(n, c_in, h, w)
    # 2 FLOPs per multiply-add: each conv output sums c_in * k * k products, each logit c_out*h*w.
    conv = 2 * n * c_out * h * w * c_in * k * k
    linear = 2 * n * (c_out * h * w) * classes
    assert count_flops(lambda: net(x)) == conv + linear
    # Backward: the linear layer's input and weight gradients (one forward's worth each), the
    # conv's weight gradient only (its input needs no gradient).
    assert count_flops(lambda: net(x).sum().backward()) == conv + linear + 2 * linear + conv


def test_model_flops_of_the_built_networks() -> None:
    cfg = load_config(preset="debug")
    per_image = model_flops(cfg)
    assert all(v > 0 for v in per_image.values())
    k_g, k_d = cfg.schedule.k_g, cfg.schedule.k_d
    mix = (k_g * per_image["refiner_step"] + k_d * per_image["disc_step"]) / (k_g + k_d)
    assert per_image["train"] == pytest.approx(mix)
    # An R step runs R forward and backward (and D's): more than a refine forward's work.
    assert per_image["refiner_step"] > 2 * per_image["refine_forward"]
    # Counts are per image: the same for another counting batch.
    assert model_flops(cfg, batch_size=8) == pytest.approx(per_image)
    # A wider refiner costs more per image.
    wide = load_config(preset="debug", overrides=["model.refiner_features=32"])
    assert model_flops(wide)["refine_forward"] > per_image["refine_forward"]


def test_measured_peak_and_shares() -> None:
    cfg = load_config(preset="debug")
    peak = measure_peak(cfg, torch.device("cpu"), threads=1, seconds=0.1)
    assert peak["matmul_flops"] > 0 and peak["conv_flops"] > 0
    assert peak["peak_flops"] == max(peak["matmul_flops"], peak["conv_flops"])
    assert peak["datasheet_flops"] is None and peak["threads"] == 1
    row = account(1e9, 10.0, peak)
    assert row["achieved_flops"] == pytest.approx(1e10)
    assert row["share_of_measured_peak"] == pytest.approx(1e10 / peak["peak_flops"])
    assert account(1e9, 10.0, peak, num_devices=2)["share_of_measured_peak"] == pytest.approx(
        row["share_of_measured_peak"] / 2
    )
    assert row["share_of_datasheet"] is None
    assert "matmul" in format_peak(peak)
    lines = format_flops({"train": 1e9}, {"bare": row})
    assert lines[0] == "model FLOPs per image: train 1 G" and lines[2].startswith("bare")


def test_best_peak_keeps_each_kernels_better_figure() -> None:
    first = {"device": "cpu", "matmul_flops": 10.0, "conv_flops": 4.0, "peak_flops": 10.0}
    last = {"device": "cpu", "matmul_flops": 6.0, "conv_flops": 12.0, "peak_flops": 12.0}
    best = best_peak([first, last])
    assert (best["matmul_flops"], best["conv_flops"], best["peak_flops"]) == (10.0, 12.0, 12.0)
    assert best["parts_peak_flops"] == [10.0, 12.0] and first["peak_flops"] == 10.0


def test_datasheet_peaks_by_card_name() -> None:
    # Names as torch.cuda.get_device_name() gives them; the NVL rows come before the SXM ones.
    assert datasheet_flops("NVIDIA H200", "bf16") == DATASHEET_TFLOPS["H200"]["bf16"] * 1e12
    assert datasheet_flops("NVIDIA H200 NVL", "bf16") == 835.5e12
    assert datasheet_flops("NVIDIA H100 80GB HBM3", "tf32") == 494.5e12
    assert datasheet_flops("NVIDIA H100 PCIe", "fp32") == 51e12
    assert datasheet_flops("NVIDIA A100-SXM4-80GB", "bf16") is None
    for figures in DATASHEET_TFLOPS.values():  # dense: half precision ~2x TF32 (rounded sheets)
        assert figures["bf16"] == figures["fp16"] == pytest.approx(2 * figures["tf32"], rel=0.01)
        assert figures["tf32"] > figures["fp32"]


def test_host_to_device_is_a_no_op_on_cpu() -> None:
    to_device = HostToDevice(torch.device("cpu"))
    batch = torch.rand(2, 1, 4, 4)
    assert to_device(batch) is batch and to_device.stream is None and not to_device.pin_memory
