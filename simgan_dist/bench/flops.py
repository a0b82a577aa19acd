"""How far a bench is from what the hardware can do: model FLOPs per image counted on the
networks as built, peaks measured in the same run on the same device and threads, and the share
of them a figure reached (and, on a GPU, of the card's datasheet peak).

FLOPs are torch.utils.flop_counter's (2 per multiply-add of matmuls and convolutions, forward
and backward); elementwise ops and optimizer updates count 0,
so the figures are model FLOPs, a lower bound on the work done. Counted over one R step and one
D step of train/loop.py (refiner_step, disc_step, the loss and backward included) and one refine
forward, on a small batch and divided by its size (the counts are linear in the batch).

The measured peak is the better of a dense fp32 (or the precision's dtype) matmul and a
convolution shaped like R's own (its features, kernel and image size), each timed for
PEAK_SECONDS after a warm-up: what this device and thread count reach on well-shaped work.
Benches measure it at their start and end and keep the better (best_peak); a loaded machine can
only lower a peak, and the two measurements' spread goes into the trust verdict.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

import torch
from torch.utils.flop_counter import FlopCounterMode

from simgan_dist.config import Config
from simgan_dist.model.networks import Refiner
from simgan_dist.train.loop import disc_step, refiner_step
from simgan_dist.train.session import build_updaters

COUNT_BATCH = 4  # images per counted step (even; the diversity term takes a quarter of them)
PEAK_SECONDS = 1.0  # timed per microbenchmark
# Dense (no sparsity) peak TFLOP/s by card and precision. Source: NVIDIA H100 Tensor Core GPU
# datasheet and NVIDIA H200 datasheet (their tensor-core figures are "with sparsity": halved
# here). tf32 is what fp32 convolutions run as by default (torch.backends.cudnn.allow_tf32).
DATASHEET_TFLOPS: dict[str, dict[str, float]] = {
    "H200 NVL": {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5},
    "H200": {"fp32": 67.0, "tf32": 494.5, "bf16": 989.5, "fp16": 989.5},  # SXM
    "H100 NVL": {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5},
    "H100 PCIe": {"fp32": 51.0, "tf32": 378.0, "bf16": 756.0, "fp16": 756.0},
    "H100": {"fp32": 67.0, "tf32": 494.5, "bf16": 989.5, "fp16": 989.5},  # SXM (HBM3)
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def count_flops(fn: Callable[[], object]) -> int:
    """Model FLOPs of what fn runs (matmuls and convolutions, forward and backward)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def model_flops(cfg: Config, batch_size: int = COUNT_BATCH) -> dict[str, float]:
    """FLOPs per image of an R step, a D step, their K_g/K_d mix (one training image: every step
    draws a batch) and a refine forward, on fresh networks built from cfg (on the CPU: a count
    does not depend on the device)."""
    shape = (batch_size, cfg.model.image_channels, cfg.model.image_height, cfg.model.image_width)
    refiner, disc = build_updaters(cfg, torch.device("cpu"))
    r_net = cast("Refiner", refiner.module)
    synthetic, real = torch.rand(shape) * 2 - 1, torch.rand(shape) * 2 - 1
    r_step = count_flops(lambda: refiner_step(refiner, disc, synthetic, cfg, adversarial=True))
    d_step = count_flops(lambda: disc_step(refiner, disc, synthetic, real, None, 0.0))
    with torch.inference_mode():
        noise = r_net.noise_like(synthetic)
        forward = count_flops(lambda: r_net(synthetic, noise=noise))
    k_g, k_d = cfg.schedule.k_g, cfg.schedule.k_d
    return {
        "refiner_step": r_step / batch_size,
        "disc_step": d_step / batch_size,
        "train": (k_g * r_step + k_d * d_step) / ((k_g + k_d) * batch_size),
        "refine_forward": forward / batch_size,
    }


def _rate(work: Callable[[], object], flops: float, device: torch.device, seconds: float) -> float:
    """FLOP/s of work (flops each call) over at least `seconds`, after one untimed call."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    work()
    sync()
    started, calls = time.perf_counter(), 0
    while calls < 2 or time.perf_counter() - started < seconds:
        work()
        calls += 1
    sync()
    return calls * flops / (time.perf_counter() - started)


def measure_peak(
    cfg: Config,
    device: torch.device,
    threads: int,
    precision: str = "fp32",
    seconds: float = PEAK_SECONDS,
) -> dict[str, Any]:
    """FLOP/s of a dense matmul and of a convolution shaped like R's, with `threads` torch threads
    on device, in precision's dtype; "peak" is the better of the two."""
    dtype = DTYPES[precision]
    on_gpu = device.type == "cuda"
    n = 8192 if on_gpu else 512
    a = torch.rand(n, n, device=device, dtype=dtype)
    b = torch.rand(n, n, device=device, dtype=dtype)
    m = cfg.model
    batch = 256 if on_gpu else 32
    conv = torch.nn.Conv2d(m.refiner_features, m.refiner_features, m.refiner_kernel,
                           padding=m.refiner_kernel // 2).to(device, dtype)  # fmt: skip
    x = torch.rand(batch, m.refiner_features, m.image_height, m.image_width, device=device)
    x = x.to(dtype)
    conv_flops = 2 * conv.weight.numel() * batch * m.image_height * m.image_width
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            matmul = _rate(lambda: a @ b, 2 * n**3, device, seconds)
            convolution = _rate(lambda: conv(x), conv_flops, device, seconds)
    finally:
        torch.set_num_threads(saved)
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if on_gpu else "cpu",
        "threads": threads,
        "precision": precision,
        "matmul_flops": matmul,
        "conv_flops": convolution,
        "peak_flops": max(matmul, convolution),
        "datasheet_flops": None,
    }
    if on_gpu:
        result["datasheet_flops"] = datasheet_flops(result["device"], gpu_precision(precision))
        result["datasheet_precision"] = gpu_precision(precision)
    return result


def best_peak(peaks: list[dict[str, Any]]) -> dict[str, Any]:
    """Peaks measured at the start and the end of a bench as one: each kernel's better figure
    (a busy moment only lowers a peak), with every measurement's peak kept for the trust check."""
    best = dict(peaks[0])
    for kernel in ("matmul_flops", "conv_flops"):
        best[kernel] = max(p[kernel] for p in peaks)
    best["peak_flops"] = max(best["matmul_flops"], best["conv_flops"])
    best["parts_peak_flops"] = [p["peak_flops"] for p in peaks]
    return best


def gpu_precision(precision: str) -> str:
    """The datasheet column a precision runs at: fp32 convolutions use TF32 tensor cores unless
    cuDNN's TF32 is turned off."""
    if precision == "fp32" and torch.backends.cudnn.allow_tf32:
        return "tf32"
    return precision


def datasheet_flops(device_name: str, precision: str) -> float | None:
    """The card's dense datasheet peak in FLOP/s, None for a card not in the table."""
    for card, figures in DATASHEET_TFLOPS.items():  # the table lists NVL/PCIe before the SXM
        if card in device_name:
            return figures[precision] * 1e12
    return None


def account(
    flops_per_image: float, images_per_s: float, peak: dict[str, Any], num_devices: int = 1
) -> dict[str, float | None]:
    """Achieved FLOP/s of a figure and its share of the peak of the num_devices it ran on (each
    worker or process had one device, or one core at 1 thread, of its own)."""
    achieved = flops_per_image * images_per_s
    sheet = peak.get("datasheet_flops")
    return {
        "flops_per_image": flops_per_image,
        "achieved_flops": achieved,
        "share_of_measured_peak": achieved / (num_devices * peak["peak_flops"]),
        "share_of_datasheet": achieved / (num_devices * sheet) if sheet else None,
    }


def _si(value: float) -> str:
    """FLOP counts in G or T, as the tables print them."""
    if value >= 1e12:
        return f"{value / 1e12:.2f} T"
    return f"{value / 1e9:.3g} G"


def format_peak(peak: dict[str, Any]) -> str:
    line = (
        f"peak measured on {peak['device']}, {peak['threads']} thread(s), {peak['precision']}: "
        f"matmul {_si(peak['matmul_flops'])}FLOP/s, conv (R's shape) "
        f"{_si(peak['conv_flops'])}FLOP/s"
    )
    if peak.get("datasheet_flops"):
        line += f"; datasheet {_si(peak['datasheet_flops'])}FLOP/s ({peak['datasheet_precision']})"
    return line


def format_flops(per_image: dict[str, float], rows: dict[str, dict[str, Any]]) -> list[str]:
    """The FLOP lines of a bench table: FLOPs per image, then one line per accounted figure."""
    lines = [
        "model FLOPs per image: "
        + ", ".join(f"{k.replace('_', ' ')} {_si(v)}" for k, v in per_image.items()),
        f"{'figure':<16} {'GFLOP/s':>9} {'of peak':>8} {'of sheet':>9}",
    ]
    for name, row in rows.items():
        sheet = row["share_of_datasheet"]
        lines.append(
            f"{name:<16} {row['achieved_flops'] / 1e9:9.2f} "
            f"{100 * row['share_of_measured_peak']:7.1f}% "
            + (f"{100 * sheet:8.2f}%" if sheet is not None else f"{'-':>9}")
        )
    return lines
