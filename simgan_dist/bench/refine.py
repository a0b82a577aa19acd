"""`simgan bench refine`: bare refiner forward vs shards in, shards out on Ray, in one run.

- bare: ShardRefiner.forward on batches of decoded images already in memory as tensors, in this
  process, with the workers' settings (batch, threads, precision, memory format); timed in two
  halves, before and after the Ray run, so a change in the machine's load shows as a spread.
- end-to-end: refine_shards over freshly built shards (read, decode, refine, encode, write,
  done-records, manifest). "steady" is images / (last shard finished - first shard started),
  from the done-records: Ray and actor start-up are left out, every per-shard cost is in.
  "whole run" is the command's own images/s, start-up included.

The projection for 1,000,000 images uses the steady figure (start-up is seconds, once). The
per-image parts (decode, encode, forward) and what a node of given CPUs and GPUs would refine
from them are bench/refine_parts.py's.
Both figures get their FLOP/s and share of a matmul/conv peak measured at the start with the
workers' threads and precision (bench/flops.py; end-to-end against one peak per worker), and the
table ends with a trust verdict: the bare halves drifting, or the hypervisor stealing, makes the
ratio untrustworthy (bench/cpu.py).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from simgan_dist.bench.cpu import format_trust, machine_sample, steal_since, trust
from simgan_dist.bench.flops import (
    account,
    best_peak,
    format_flops,
    format_peak,
    measure_peak,
    model_flops,
)
from simgan_dist.bench.refine_parts import codec_rates, format_parts, node_projection
from simgan_dist.config import Config, ConfigError, load_config
from simgan_dist.data.reader import read_samples
from simgan_dist.io.shardio import resolve_shard_urls
from simgan_dist.model.networks import build_refiner
from simgan_dist.model.pixels import to_batch
from simgan_dist.refine import ledger as refine_ledger
from simgan_dist.refine.ray_pool import refine_shards
from simgan_dist.refine.shard import RefineSettings, ShardRefiner
from simgan_dist.train.session import save_initial_checkpoint

TARGET_RATIO = 0.8  # end-to-end (steady) / bare forward, on CPU
PROJECTED_IMAGES = 1_000_000
BARE_SECONDS = 10.0  # timed per half (whole batches, at least 2); after WARMUP_BATCHES untimed
WARMUP_BATCHES = 2


def build_bench_shards(cfg: Config, preset: str, out: Path, num_images: int, per_shard: int):
    from simgan_dist.data.build import build_synthetic_digits, build_synthetic_eyes

    if preset == "gaze":
        return build_synthetic_eyes(out, num_images, per_shard, seed=0)
    if (cfg.model.image_height, cfg.model.image_width) == (28, 28):
        return build_synthetic_digits(out, num_images, per_shard, seed=0)
    raise ConfigError(f"bench refine: no simulator for preset {preset!r}; pass --shards")


def bare_forward(refiner: ShardRefiner, batch: torch.Tensor, seconds: float) -> float:
    """images/s of the forward pass alone (including the uint8 conversion the workers do)."""
    for _ in range(WARMUP_BATCHES):
        refiner.forward(batch)
    started, num_batches = time.perf_counter(), 0
    while num_batches < 2 or time.perf_counter() - started < seconds:
        refiner.forward(batch)
        num_batches += 1
    return num_batches * len(batch) / (time.perf_counter() - started)


def bench_refine(
    preset: str = "gaze",
    num_images: int = 4096,
    samples_per_shard: int = 512,
    settings: RefineSettings | None = None,
    shards: str | None = None,
    work_dir: str | Path | None = None,
    node_cpus: int | None = None,
    node_gpus: int | None = None,
) -> dict[str, Any]:
    """Measure both figures in one run, and the per-image parts with a node's projection
    (node_cpus / node_gpus: this machine's unless given); see the module docs."""
    from simgan_dist.train.ray_start import ensure_ray

    settings = settings or RefineSettings()
    cfg = load_config(preset=preset)
    work = Path(work_dir or tempfile.mkdtemp(prefix="simgan-bench-refine-"))
    checkpoint = save_initial_checkpoint(cfg, work / "checkpoint-000000000000")
    if shards is None:
        shards = str(work / "input")
        build_bench_shards(cfg, preset, Path(shards), num_images, samples_per_shard)
    first = resolve_shard_urls(shards)[0]
    images = [img for _, img, _, _ in read_samples([first])][: settings.batch_size]
    batch = to_batch(images)
    weights = build_refiner(cfg.model).state_dict()  # speed does not depend on the values
    bare = ShardRefiner(weights, cfg.model, settings, lineage={})
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads_per_worker)
    load_before = os.getloadavg()
    started = machine_sample()
    device = torch.device("cuda" if settings.use_gpu else "cpu")
    precision = "bf16" if settings.bf16 else "fp32"
    peaks = [measure_peak(cfg, device, settings.threads_per_worker, precision)]
    try:
        halves = [bare_forward(bare, batch, BARE_SECONDS)]
        ensure_ray(os.cpu_count())
        out = work / "refined"
        summary = refine_shards(checkpoint, shards, out, settings, progress=False)
        halves.append(bare_forward(bare, batch, BARE_SECONDS))
        peaks.append(measure_peak(cfg, device, settings.threads_per_worker, precision))
        torch.set_num_threads(1)  # the codec parts: one reader or writer thread's rate
        parts: dict[str, Any] = codec_rates(first)
    finally:
        torch.set_num_threads(threads)
    records = refine_ledger.read_done(str(out)).values()
    span = max(r["finished"] for r in records) - min(r["started"] for r in records)
    steady = summary["num_images_refined"] / span
    bare_ips, peak = sum(halves) / 2, best_peak(peaks)
    per_image = model_flops(cfg)["refine_forward"]
    # The pool's size as refine_shards picks it (one per GPU, or per threads_per_worker CPUs).
    per_machine = torch.cuda.device_count() if settings.use_gpu else os.cpu_count() or 1
    auto = max(1, per_machine // (1 if settings.use_gpu else settings.threads_per_worker))
    num_workers = min(settings.num_workers or auto, summary["num_shards_refined"])
    parts["node_cpus"] = node_cpus or os.cpu_count() or 1
    parts["node_gpus"] = (
        node_gpus
        if node_gpus is not None
        else (torch.cuda.device_count() if settings.use_gpu else 0)
    )
    parts["projection"] = node_projection(
        parts["codec_images_per_s"], sum(halves) / 2, settings.threads_per_worker,
        parts["node_cpus"], parts["node_gpus"],
    )  # fmt: skip
    return {
        "preset": preset,
        "image_shape": [cfg.model.image_channels, cfg.model.image_height, cfg.model.image_width],
        "settings": vars(settings),
        "device": torch.cuda.get_device_name() if settings.use_gpu else "cpu",
        "cpu_count": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "num_images": summary["num_images_refined"],
        "num_shards": summary["num_shards_refined"],
        "bare_images_per_s": bare_ips,
        "bare_halves_images_per_s": halves,
        "e2e_steady_images_per_s": steady,
        "e2e_whole_run_images_per_s": summary["images_per_s"],
        "e2e_wall_s": summary["wall_s"],
        "ratio": steady / bare_ips,
        "ratio_whole_run": summary["images_per_s"] / bare_ips,
        "target_ratio": TARGET_RATIO,
        "projected_hours_1m": PROJECTED_IMAGES / steady / 3600,
        "work_dir": str(work),
        "parts": parts,
        "flops": {
            "per_image": {"refine_forward": per_image},
            "peak": peak,
            "bare": account(per_image, bare_ips, peak),
            "e2e_steady": account(per_image, steady, peak, num_workers),
            "num_workers": num_workers,
        },
        "trust": trust(
            {"bare": halves, "peak": peak["parts_peak_flops"]}, steal_since(started)["steal_share"]
        ),
    }


def format_refine_table(r: dict[str, Any]) -> str:
    s, flops = r["settings"], r["flops"]
    verdict = "met" if r["ratio"] >= r["target_ratio"] else "MISSED"
    return "\n".join(
        [
            f"simgan bench refine: preset {r['preset']}, image {'x'.join(map(str, r['image_shape']))}"
            f", device {r['device']}, batch {s['batch_size']}, {s['threads_per_worker']} threads per"
            f" worker, precision {s['precision']}, channels_last {s['channels_last']}",
            f"machine: {r['cpu_count']} CPUs; load average (1 min) {r['loadavg_before'][0]:.2f} "
            f"before, {r['loadavg_after'][0]:.2f} after",
            f"bare refiner forward (tensors in memory): {r['bare_images_per_s']:10.1f} images/s "
            f"(halves before / after: {r['bare_halves_images_per_s'][0]:.1f} / "
            f"{r['bare_halves_images_per_s'][1]:.1f})",
            f"end-to-end, shards in -> shards out:      {r['e2e_steady_images_per_s']:10.1f} images/s"
            f" steady ({r['num_images']} images, {r['num_shards']} shards); whole run "
            f"{r['e2e_whole_run_images_per_s']:.1f} images/s in {r['e2e_wall_s']:.1f} s",
            f"ratio end-to-end / bare: {r['ratio']:.2f} (target >= {r['target_ratio']}: {verdict});"
            f" whole run {r['ratio_whole_run']:.2f}",
            f"projected for {PROJECTED_IMAGES:,} images on this machine: "
            f"{r['projected_hours_1m']:.2f} h",
            *format_parts(r["parts"]),
            format_peak(flops["peak"]),
            *format_flops(flops["per_image"], {k: flops[k] for k in ("bare", "e2e_steady")}),
            f"(e2e_steady against {flops['num_workers']} worker(s)' peak)",
            format_trust(r["trust"]),
        ]
    )
