"""`simgan bench resume`: time to the first batch of a resumed stream against images trained.

On a simulated digit corpus, with the preset's batch, shuffle buffer and loader workers, as a
training rank streams it: for each point, an unbroken stream draws that many images and gives its
position (what a checkpoint saves); then a fresh stream seeks to it and the time to its first batch
is the resume time (pipeline.py: finished shards not opened, trained samples not decoded). For
contrast, a fresh stream replays the same images the way resume worked before positions were
saved. Each resumed first batch is checked against the unbroken stream's next one.

Target: resume time flat in finished shards, shown as the slope of a least-squares line through
the points (seconds per 1,000 finished shards) next to the replay's.
"""

from __future__ import annotations

import itertools
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from simgan_dist.config import load_config
from simgan_dist.data.build import build_synthetic_digits
from simgan_dist.data.catalog import EpochPlan
from simgan_dist.data.reader import batch_stream
from simgan_dist.data.streams import image_shape
from simgan_dist.io.shardio import resolve_shard_urls


def _slope(xs: list[float], ys: list[float]) -> float:
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mean_x) ** 2 for x in xs)
    return (
        sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0
    )


def bench_resume(
    nimg_points: list[int],
    num_shards: int = 60,
    samples_per_shard: int = 1000,
    preset: str = "digits",
    num_loader_workers: int | None = None,
) -> dict[str, Any]:
    cfg = load_config(preset=preset)
    batch = cfg.schedule.batch_size
    workers = cfg.data.num_loader_workers if num_loader_workers is None else num_loader_workers
    with tempfile.TemporaryDirectory(prefix="simgan-bench-resume-") as tmp:
        build_synthetic_digits(Path(tmp), num_shards * samples_per_shard, samples_per_shard, seed=0)
        urls = resolve_shard_urls(tmp)
        plan = EpochPlan(tuple(urls), (samples_per_shard,) * len(urls), seed=0, world_size=1)

        def stream(ends: list[str] | None = None) -> Any:
            return batch_stream(
                plan, batch, image_shape(cfg), seed=0, shuffle_window=cfg.data.shuffle_window,
                num_loader_workers=workers, with_meta=False,
                on_shard_end=None if ends is None else lambda epoch, url: ends.append(url),
            )  # fmt: skip

        points = []
        for nimg in nimg_points:
            num_batches = nimg // batch
            ends: list[str] = []
            unbroken = stream(ends)
            for _ in itertools.islice(unbroken, num_batches):
                pass
            position = unbroken.position()
            expected = next(unbroken)
            started = time.perf_counter()
            resumed = stream()
            resumed.seek(position)
            first = next(resumed)
            resume_s = time.perf_counter() - started
            started = time.perf_counter()
            replayed = stream()
            for _ in itertools.islice(replayed, num_batches + 1):
                pass
            replay_s = time.perf_counter() - started
            exact = [m["__key__"] for m in first[1]] == [m["__key__"] for m in expected[1]]
            points.append({
                "nimg": num_batches * batch, "num_finished_shards": len(ends),
                "resume_s": resume_s, "replay_s": replay_s,
                "exact": exact and torch.equal(first[0], expected[0]),
            })  # fmt: skip
            del unbroken, resumed, replayed  # their loader processes end here
    shards = [p["num_finished_shards"] / 1000 for p in points]
    return {
        "preset": preset,
        "batch_size": batch,
        "shuffle_window": cfg.data.shuffle_window,
        "num_loader_workers": workers,
        "num_shards": num_shards,
        "samples_per_shard": samples_per_shard,
        "points": points,
        "resume_s_per_1000_shards": _slope(shards, [p["resume_s"] for p in points]),
        "replay_s_per_1000_shards": _slope(shards, [p["replay_s"] for p in points]),
        "all_exact": all(p["exact"] for p in points),
    }


def format_resume_table(r: dict[str, Any]) -> str:
    lines = [
        f"simgan bench resume: preset {r['preset']}, batch {r['batch_size']}, shuffle buffer "
        f"{r['shuffle_window']}, {r['num_loader_workers']} loader process(es), corpus "
        f"{r['num_shards']} shards x {r['samples_per_shard']}",
        "| images trained | shards finished | resume s (seek) | replay s (before) | exact |",
        "|---|---|---|---|---|",
    ]
    for p in r["points"]:
        lines.append(
            f"| {p['nimg']:,} | {p['num_finished_shards']} | {p['resume_s']:.3f} "
            f"| {p['replay_s']:.2f} | {'yes' if p['exact'] else 'NO'} |"
        )
    lines.append(
        f"slope, s per 1,000 finished shards: resume {r['resume_s_per_1000_shards']:.3f}, replay "
        f"{r['replay_s_per_1000_shards']:.2f}; every resumed batch equal to the unbroken "
        f"stream's: {'yes' if r['all_exact'] else 'NO'}"
    )
    return "\n".join(lines)
