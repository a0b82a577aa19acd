"""`simgan bench train`: training throughput of our full loop against a bare PyTorch loop.

Five figures from one run (three on GPU), same model, same global batch, one thread per process:

- bare: a plain single-process loop written out in bench/bare.py (not train/loop.py), images in memory as
  tensors, plain torch optimizers, the paper's K_g/K_d alternation and a minimal history buffer;
- ours_1w: `run_training` on Ray Train with 1 worker: shards, DeepSpeed engines, buffer, logging;
- ours_2w: the same with 2 workers (the global batch split over them);
- bare_2p (CPU only): two bare loops at once, one process each on half the global batch: the
  ceiling for 2 workers on this machine (no communication, data loading or Ray). On a 2-core
  box bare_2p/ours_1w tells whether the 1.8 scaling target is reachable at all there.
- loop_2p (CPU only): our loop with its DeepSpeed engines and global buffer on 2 plain gloo
  processes, images in memory, no Ray (bench/loop_pair.py): between bare_2p and ours_2w it
  splits what 2 workers lose into the loop's collectives and Ray's share of the cores.

Only the adversarial phase's steady state is timed. For our loop the time per log interval comes
from metrics.jsonl (interval images / images_per_s), skipping the first interval(s), which hold
Ray/worker/DeepSpeed startup and the data loaders' first fill. Grids and periodic checkpoints are
moved past the end of the run (the final ones happen after the last measured interval), so they
are not in the figure. The bare loop runs the same number of warm-up iterations untimed. The
configurations run in alternating rounds (bare part, 1 worker, 2 workers; then a last bare part),
so a drift in the machine's speed weighs on all of them alike; the table shows each part's figure.
Every loop, bare or ours, runs with glibc's malloc trimming turned off (malloc_tuning.py), so
none is slowed by page faults. During each Ray run bench/cpu.py samples where the machine's CPU
goes (workers, loaders, Ray and the driver, other, steal, idle) and accounts the same timed intervals:
on a box with few cores, what Ray's own processes take is what a 2-worker run loses against the
1-worker run, which gets them from an idle core. Every figure's FLOP/s and share of a peak
measured at the start on the same device (bench/flops.py) are reported, and a trust verdict
(bench/cpu.py): a figure whose parts drift, or a machine whose hypervisor steals, makes the
ratios untrustworthy. The table is bench/table.py's.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from simgan_dist.bench.bare import bare_loop_one_thread, bare_pair
from simgan_dist.bench.cpu import CpuSampler, combine_cores, machine_sample, steal_since, trust
from simgan_dist.bench.flops import account, best_peak, measure_peak, model_flops
from simgan_dist.bench.loop_pair import loop_pair, timed_schedule
from simgan_dist.config import Config, ConfigError, load_config
from simgan_dist.data.streams import image_shape
from simgan_dist.errors import InputError
from simgan_dist.io.shardio import MANIFEST_NAME
from simgan_dist.train.malloc_tuning import tune_malloc

DEFAULT_NIMG = 9600  # timed images per configuration: ~7 min for the whole bench on 2 cores
DEFAULT_ROUNDS = 2  # Ray runs per configuration, alternating (see bench_train)
MEASURED_INTERVALS = 5  # log intervals timed per Ray run (the figure is their total)
WARMUP_INTERVALS = 1  # intervals skipped first (startup, loader fill)
TARGETS = {"ours_1w/bare": 0.9, "ours_2w/ours_1w": 1.8}
# Processes (each with 1 thread, or one GPU) behind each figure: the peak its FLOPs are shared of.
NUM_PROCESSES = {
    "bare": 1, "bare_compiled": 1, "ours_1w": 1, "ours_2w": 2, "bare_2p": 2, "loop_2p": 2,
}  # fmt: skip
# Ratios without a target: against the 2-process ceiling (CPU runs only), compiled vs eager.
# loop_2p/bare_2p: what the loop and its collectives cost; ours_2w/loop_2p: Ray, streams, outputs.
CEILING_RATIOS = (
    "bare_2p/ours_1w", "ours_2w/bare_2p", "loop_2p/bare_2p", "ours_2w/loop_2p",
    "bare_compiled/bare",
)  # fmt: skip
DIGIT_CORPORA = ("digits-synth", "digits-real-train")
# Built when the chosen shard root lacks the digit corpora and none was named (a temp dir).
BENCH_SYNTHETIC, BENCH_SAMPLES_PER_SHARD = 4000, 1000


# ---------------------------------------------------------------------------------------------
# Schedule: how many iterations are warm-up and how many are timed


def plan(cfg: Config, nimg: float) -> dict[str, int]:
    """Iterations of the adversarial phase: a warm-up part and a timed part of ~nimg images,
    cut into log intervals of whole iterations (so each metrics row covers the same work)."""
    s = cfg.schedule
    iter_nimg = (s.k_g + s.k_d) * s.batch_size  # every R or D step draws one global batch
    iters = max(1, round(nimg / iter_nimg))
    intervals = min(MEASURED_INTERVALS, iters)
    iters_per_interval = math.ceil(iters / intervals)
    return {
        "iter_nimg": iter_nimg,
        "iters_per_interval": iters_per_interval,
        "interval_nimg": iters_per_interval * iter_nimg,
        "measured_intervals": intervals,
        "warmup_intervals": WARMUP_INTERVALS,
        "warmup_iters": WARMUP_INTERVALS * iters_per_interval,
        "measured_iters": intervals * iters_per_interval,
        "measured_nimg": intervals * iters_per_interval * iter_nimg,
    }


# ---------------------------------------------------------------------------------------------
# (b), (c) our loop on Ray Train


def steady_throughput(rows: list[dict], warmup_rows: int) -> dict:
    """Images/s of the adversarial phase from metrics.jsonl rows, skipping its first warmup_rows.

    Each row's images_per_s covers the images since the previous row, so its interval lasted
    (cur_nimg - previous cur_nimg) / images_per_s seconds; the figure is total images over
    total seconds of the kept rows (not a mean of rates)."""
    nimg, seconds, kept = 0, 0.0, 0
    adversarial_seen = 0
    prev: dict | None = None
    window: list[float | None] = [None, None]  # "time" of the kept rows' first start and last end
    for row in rows:
        cur = int(row["cur_nimg"])
        if row.get("phase") == "adversarial":
            adversarial_seen += 1
            # The log's first row has no images_per_s (no interval before it).
            if adversarial_seen > warmup_rows and prev is not None and row.get("images_per_s"):
                delta = cur - int(prev["cur_nimg"])
                nimg += delta
                seconds += delta / float(row["images_per_s"])
                kept += 1
                if kept == 1:
                    window[0] = prev.get("time")
                window[1] = row.get("time")
        prev = row
    if kept == 0:
        raise InputError(
            f"no adversarial metrics rows after the first {warmup_rows} to measure "
            f"(got {len(rows)} rows): raise --nimg"
        )
    return {
        "images_per_s": nimg / seconds,
        "measured_nimg": nimg,
        "measured_s": seconds,
        "window": window,
    }


def ray_loop(cfg: Config, num_workers: int, schedule: dict[str, int], storage: Path) -> dict:
    from simgan_dist.train.ray_train import run_training
    from simgan_dist.train.runs import new_run_name, start_run

    timed = timed_schedule(cfg, schedule["warmup_iters"] + schedule["measured_iters"])
    end = sum(timed.values())  # images of the whole run: both pretraining steps and the timed part
    run_cfg = cfg.replace(
        schedule=timed,
        run={
            "num_workers": num_workers,
            "threads_per_worker": 1,
            "storage_path": str(storage),
            "name": new_run_name(f"bench-{num_workers}w"),
            "log_every_nimg": schedule["interval_nimg"],
            # Past the end: the grid and checkpoint of finish() come after the last row.
            "grid_every_nimg": 10 * end,
            "checkpoint_every_nimg": 10 * end,
            "keep_checkpoints": 1,
        },
    )
    run_cfg, run_dir = start_run(run_cfg)
    started = time.perf_counter()
    with CpuSampler() as sampler:
        run_training(run_cfg, run_dir)
    wall = time.perf_counter() - started
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    figures = steady_throughput(rows, schedule["warmup_intervals"])
    start, end = figures.pop("window")
    figures["cpu_cores"] = sampler.cores(start, end) if start and end else None
    figures["wall_s"] = wall  # the whole fit: Ray/worker startup, loaders, final checkpoint
    figures["run_dir"] = str(run_dir)  # removed afterwards unless --work-dir was given
    return figures


# ---------------------------------------------------------------------------------------------
# Shards


def _has(root: Path, name: str) -> bool:
    return (root / name / MANIFEST_NAME).exists()


def resolve_shards(cfg: Config, shards: str | Path | None, scratch: Path) -> tuple[Path, str]:
    """Where the preset's two corpora are (their directory names looked up under a root).

    shards given: that root; the digit corpora are built there when missing (the same corpus
    as `simgan demo`, so a later demo reusing the root is unaffected). Not given: ./shards if it
    holds them, else a small digit corpus built in the scratch directory."""
    from simgan_dist.data import build as shard_build
    from simgan_dist.data.build import ensure_digit_shards

    names = (Path(cfg.data.synthetic).name, Path(cfg.data.real).name)
    digits = names == DIGIT_CORPORA
    if shards is not None:
        root = Path(shards).resolve()
        if digits and not all(_has(root, n) for n in names):
            ensure_digit_shards(root, seed=0)
            return root, "built"
    else:
        root = Path("shards").resolve()
        if not all(_has(root, n) for n in names) and digits:
            root = scratch / "shards"
            shard_build.build_synthetic_digits(
                root / "digits-synth", BENCH_SYNTHETIC, BENCH_SAMPLES_PER_SHARD, seed=0
            )
            shard_build.build_real_digits(
                root / "digits-real-train", root / "digits-real-eval", BENCH_SAMPLES_PER_SHARD
            )
            return root, "built (temporary)"
    missing = [n for n in names if not _has(root, n)]
    if missing:
        raise ConfigError(f"--shards: {root} lacks {', '.join(missing)} (no {MANIFEST_NAME})")
    return root, "existing"


# ---------------------------------------------------------------------------------------------
# The benchmark


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


def _split(total: int, num_parts: int) -> list[int]:
    """total iterations in num_parts near-equal parts, larger ones first."""
    return [total // num_parts + (i < total % num_parts) for i in range(num_parts)]


def _combine(parts: list[dict]) -> dict:
    """One configuration's figure from its timed parts: their images over their seconds."""
    nimg = sum(p["measured_nimg"] for p in parts)
    seconds = sum(p["measured_s"] for p in parts)
    combined = {
        "images_per_s": nimg / seconds,
        "measured_nimg": nimg,
        "measured_s": seconds,
        "parts_images_per_s": [p["images_per_s"] for p in parts],
    }
    if all("wall_s" in p for p in parts):
        combined["wall_s"] = sum(p["wall_s"] for p in parts)
        combined["run_dirs"] = [p["run_dir"] for p in parts]
    if "cpu_cores" in parts[0]:  # Ray runs; None where a window was too short to account
        accounted = [p["cpu_cores"] for p in parts if p["cpu_cores"]]
        combined["cpu_cores"] = combine_cores(accounted) if accounted else None
        combined["parts_cpu_cores"] = [p["cpu_cores"] for p in parts]
    return combined


def _has_two_gpus() -> bool:
    import ray

    from simgan_dist.train.ray_start import ensure_ray

    ensure_ray()
    return ray.cluster_resources().get("GPU", 0) >= 2


def bench_train(
    preset: str = "digits",
    batch_size: int | None = None,
    nimg: int = DEFAULT_NIMG,
    device: str = "cpu",
    shards: str | Path | None = None,
    work_dir: str | Path | None = None,
    overrides: list[str] | None = None,
    say: Callable[[str], None] = print,
    rounds: int = DEFAULT_ROUNDS,
    compile_bare: bool = False,
) -> dict[str, Any]:
    """Run the configurations and return the figures (see the module doc). nimg images are
    timed per configuration in all, nimg / rounds in each of its Ray runs. compile_bare adds
    bare_compiled: the bare loop with torch.compile'd R and D, in the bare loop's rounds.

    With device="cuda" and no CUDA device, nothing is measured: the result has "skipped".
    """
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"--device: must be cpu or cuda, got {device!r}")
    if rounds < 1:
        raise ConfigError(f"--rounds: must be >= 1, got {rounds}")
    sets = list(overrides or [])
    if batch_size is not None:
        sets.append(f"schedule.batch_size={batch_size}")
    # Validated for 2 workers up front: the batch must split into two even halves.
    cfg = load_config(preset=preset, overrides=[*sets, "run.num_workers=2"])
    use_gpu = device == "cuda"
    cfg = cfg.replace(run={"use_gpu": use_gpu, "threads_per_worker": 1})
    schedule = plan(cfg, nimg / rounds)  # one Ray run's
    s = cfg.schedule
    result: dict[str, Any] = {
        "config": {
            "preset": preset,
            "batch_size": s.batch_size,
            "k_g": s.k_g,
            "k_d": s.k_d,
            "image_shape": list(image_shape(cfg)),
            "device": device,
            "overrides": sets,
            **schedule,
            "rounds": rounds,
            "measured_nimg_per_run": schedule["measured_nimg"],
            "measured_nimg": rounds * schedule["measured_nimg"],
        },
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count(),
            "torch_threads_default": torch.get_num_threads(),
            "threads_per_loop": 1,
            "loadavg_before": list(os.getloadavg()),
        },
        "results": {},
        "ratios": {},
        "notes": [],
    }
    if use_gpu and not torch.cuda.is_available():
        result["skipped"] = (
            "--device cuda: no CUDA device here (torch.cuda.is_available() is False)"
        )
        result["machine"]["loadavg_after"] = list(os.getloadavg())
        return result

    scratch = Path(tempfile.mkdtemp(prefix="simgan-bench-"))
    storage = Path(work_dir).resolve() if work_dir else scratch / "runs"
    try:
        root, how = resolve_shards(cfg, shards, scratch)
        cfg = cfg.replace(
            data={
                "synthetic": str(root / Path(cfg.data.synthetic).name),
                "real": str(root / Path(cfg.data.real).name),
            }
        )
        result["config"]["shards"] = f"{root} ({how})"
        say(
            f"[bench] preset {preset}, global batch {s.batch_size}, K_g/K_d {s.k_g}/{s.k_d}: "
            f"{rounds * schedule['measured_nimg']} images timed per configuration, in {rounds} "
            f"alternating round(s) of Ray runs, each after "
            f"{schedule['warmup_iters'] * schedule['iter_nimg']} warm-up images"
        )

        # Rounds alternate the configurations (bare part, 1 worker, 2 workers), and the bare loop
        # has one more part at the end: a drift in the machine's speed during the bench (a shared
        # box drifts by 10-20% over minutes) then weighs on every figure alike instead of on
        # whichever ran while it lasted. Each figure is its rounds' images over their seconds.
        dev = torch.device("cuda" if use_gpu else "cpu")
        result["machine"]["bare_malloc_tuned"] = tune_malloc()
        started = machine_sample()
        peaks = [measure_peak(cfg, dev, threads=1, precision=cfg.engine.precision)]
        workers = {"ours_1w": 1, "ours_2w": 2}
        if use_gpu and not _has_two_gpus():
            del workers["ours_2w"]
            result["notes"].append("ours_2w skipped: run.use_gpu needs 2 GPUs in the Ray cluster")
        bare = {"bare": cfg}
        if compile_bare:
            bare["bare_compiled"] = cfg.replace(engine={"compile": True})
        measured: dict[str, list[Any]] = {name: [] for name in (*bare, *workers)}
        bare_iters = _split(rounds * schedule["measured_iters"], rounds + 1)
        for r in range(rounds + 1):
            for name, bare_cfg in bare.items() if bare_iters[r] else ():
                say(f"[bench] {name} PyTorch loop, 1 thread, images in memory (part {r + 1})")
                warmup = schedule["warmup_iters"] if r == 0 else min(2, schedule["warmup_iters"])
                measured[name].append(bare_loop_one_thread(bare_cfg, dev, warmup, bare_iters[r]))
            if r == rounds:
                break
            for name, num_workers in workers.items():
                say(
                    f"[bench] round {r + 1}/{rounds}: our loop on Ray Train, {num_workers} x 1 thread"
                )
                measured[name].append(ray_loop(cfg, num_workers, schedule, storage))
        result["results"] = {name: _combine(parts) for name, parts in measured.items()}
        if not use_gpu:
            say("[bench] 2 bare loops at once, 1 process each on half the batch (the ceiling)")
            result["results"]["bare_2p"] = bare_pair(
                cfg, schedule["warmup_iters"], rounds * schedule["measured_iters"]
            )
            say("[bench] our loop on 2 plain processes, half the batch each, no Ray (loop_2p)")
            result["results"]["loop_2p"] = loop_pair(
                cfg, schedule["warmup_iters"], rounds * schedule["measured_iters"]
            )
        peaks.append(measure_peak(cfg, dev, threads=1, precision=cfg.engine.precision))
        peak, per_image = best_peak(peaks), model_flops(cfg)
        result["flops"] = {"per_image": per_image, "peak": peak}
        for name, r in result["results"].items():
            r["flops"] = account(per_image["train"], r["images_per_s"], peak, NUM_PROCESSES[name])
        in_parts = {n: r for n, r in result["results"].items() if "parts_images_per_s" in r}
        parts = {n: r["parts_images_per_s"] for n, r in in_parts.items()}
        parts["peak"] = peak["parts_peak_flops"]
        result["trust"] = trust(parts, steal_since(started)["steal_share"])
    finally:
        result["machine"]["loadavg_after"] = list(os.getloadavg())
        shutil.rmtree(scratch, ignore_errors=True)  # runs under work_dir are kept

    ips = {name: r["images_per_s"] for name, r in result["results"].items()}
    for key, target in TARGETS.items():
        num, den = key.split("/")
        value = _ratio(ips.get(num), ips.get(den))
        result["ratios"][key] = {
            "value": value,
            "target": target,
            "met": None if value is None else value >= target,
        }
    for key in CEILING_RATIOS:
        num, den = key.split("/")
        if num in ips and den in ips:
            result["ratios"][key] = {"value": ips[num] / ips[den], "target": None, "met": None}
    return result
