"""`simgan bench data`: decoded images/s from an S3 server and from local disk, against training.

Figures from one run, on the same shards and the same training stream (`data.batch_stream`: tar
reading, PNG decoding, shuffle buffer, batching, in DataLoader processes). Each source is read
twice, interleaved, and its better pass counts:

- local: the shards on local disk;
- s3: the same shards in a bucket of an S3 server on 127.0.0.1 (moto's, started here, unless
  --endpoint-url names another S3-compatible store), read through s3fs with the same settings;
- train: what one training process consumes, the bare PyTorch loop of `simgan bench train`
  (an upper bound on our loop's appetite) with the preset's model and batch, 1 thread.

- refine: what one refine worker consumes, the bare refiner forward of `simgan bench refine`
  with 1 thread (its preset's model, the default refine batch).

Targets: s3/local >= 0.9 and loader/train >= 3 (the loader keeps 3x ahead of one worker). From
the slower source's rate per loader process, the bench says how many loader processes keep up
with the training and refine consumers and with any --consumption rate (a GPU's, say: take it
from `simgan bench train --device cuda`). Both consumers get their FLOP/s and share of a 1-thread
matmul/conv peak measured in the same run (bench/flops.py), and the table ends with a trust
verdict on the passes' drift and the hypervisor's steal (bench/cpu.py).
Loopback S3 costs HTTP and a server in this process, not network latency: on a real store, set
data.num_loader_workers so that prefetch covers the round trips.
"""

from __future__ import annotations

import itertools
import logging
import math
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
from simgan_dist.bench.refine import bare_forward
from simgan_dist.bench.train import bare_loop_one_thread, plan
from simgan_dist.config import load_config
from simgan_dist.data.build import build_synthetic_digits
from simgan_dist.data.reader import batch_stream
from simgan_dist.io.location import Location
from simgan_dist.io.shardio import resolve_shard_urls
from simgan_dist.io.urls import filesystem
from simgan_dist.model.networks import build_refiner
from simgan_dist.refine.shard import RefineSettings, ShardRefiner
from simgan_dist.train.dist import free_port

TARGETS = {"s3/local": 0.9, "loader/train": 3.0}
BUCKET = "simgan-bench"
REFINE_SECONDS = 2.0  # the refine consumer's timed forward passes


def loaders_needed(images_per_s: float, per_loader_images_per_s: float) -> int:
    """Loader processes that decode images_per_s at one process's measured rate."""
    return max(1, math.ceil(images_per_s / per_loader_images_per_s))


def refine_rate(preset: str, seconds: float = REFINE_SECONDS) -> float:
    """Images/s one refine worker's forward takes at 1 thread (random images, its batch)."""
    cfg = load_config(preset=preset)
    settings = RefineSettings(threads_per_worker=1)
    refiner = ShardRefiner(build_refiner(cfg.model).state_dict(), cfg.model, settings, {})
    shape = (cfg.model.image_channels, cfg.model.image_height, cfg.model.image_width)
    batch = torch.rand(settings.batch_size, *shape) * 2 - 1
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return bare_forward(refiner, batch, seconds)
    finally:
        torch.set_num_threads(threads)


def start_s3_server() -> tuple[Any, str]:
    """moto's S3 server on 127.0.0.1 (a dev dependency: pip install 'simgan-dist[dev]')."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as err:
        raise SystemExit(f"bench data: needs moto[server] or --endpoint-url ({err})") from None
    port = free_port()
    # One log line per request otherwise: 100,000s of them in `bench control`.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server, f"http://127.0.0.1:{port}"


def bench_s3(endpoint_url: str | None) -> tuple[Any, dict[str, Any]]:
    """(our moto server or None, storage options): a throwaway server when no endpoint is given."""
    server = None
    if endpoint_url is None:
        server, endpoint_url = start_s3_server()
    options: dict[str, Any] = {"endpoint_url": endpoint_url}
    if server is not None:  # our throwaway server takes any keys; users' come from their chain
        options.update(key="bench", secret="bench")
    return server, options


def loader_rate(
    shards: str, options: dict[str, Any], batch_size: int, num_batches: int, workers: int
) -> dict[str, float]:
    """Images/s of batch_stream after its first batch (which holds start-up and buffer fill)."""
    corpus = Location(shards, options)
    urls = resolve_shard_urls(corpus)
    stream = batch_stream(urls, batch_size, (1, 28, 28), seed=0, shuffle_window=1000,
                          num_loader_workers=workers, with_meta=False, store=corpus)  # fmt: skip
    started = time.perf_counter()
    next(stream)
    first = time.perf_counter()
    for _ in itertools.islice(stream, num_batches):
        pass
    done = time.perf_counter()
    nimg = num_batches * batch_size
    return {"images_per_s": nimg / (done - first), "first_batch_s": first - started, "nimg": nimg}


def bench_data(
    num_samples: int = 8000,
    samples_per_shard: int = 1000,
    num_batches: int = 200,
    num_loader_workers: int = 1,
    preset: str = "digits",
    endpoint_url: str | None = None,
    consumption: list[float] | None = None,
    refine_seconds: float = REFINE_SECONDS,
) -> dict[str, Any]:
    cfg = load_config(preset=preset)
    batch = cfg.schedule.batch_size
    started = machine_sample()
    peaks = [measure_peak(cfg, torch.device("cpu"), threads=1)]
    server, options = bench_s3(endpoint_url)
    try:
        with tempfile.TemporaryDirectory(prefix="simgan-bench-data-") as tmp:
            local = Path(tmp) / "digits-synth"
            build_synthetic_digits(local, num_samples, samples_per_shard, seed=0)
            fs, _ = filesystem(f"s3://{BUCKET}", options)
            if not fs.exists(BUCKET):
                fs.mkdir(BUCKET)
            remote = f"s3://{BUCKET}/digits-synth"
            fs.put(f"{local}/", f"{BUCKET}/digits-synth/", recursive=True)
            args = (batch, num_batches, num_loader_workers)
            # Interleaved, two passes each, best of two per source: load that changes during
            # the bench hits both sources alike, and both see a warm cache on their second pass.
            rates = {}
            for attempt in (1, 2):
                rates[f"local_{attempt}"] = loader_rate(str(local), {}, *args)
                rates[f"s3_{attempt}"] = loader_rate(remote, options, *args)
            fs.rm(f"{BUCKET}/digits-synth", recursive=True)
    finally:
        if server is not None:
            server.stop()
    schedule = plan(cfg, 20 * batch * (cfg.schedule.k_g + cfg.schedule.k_d))
    train = bare_loop_one_thread(
        cfg, torch.device("cpu"), schedule["warmup_iters"], schedule["measured_iters"]
    )
    refine = refine_rate(preset, refine_seconds)
    peaks.append(measure_peak(cfg, torch.device("cpu"), threads=1))
    peak = best_peak(peaks)
    local_rate = max(rates["local_1"]["images_per_s"], rates["local_2"]["images_per_s"])
    s3_rate = max(rates["s3_1"]["images_per_s"], rates["s3_2"]["images_per_s"])
    per_loader = min(local_rate, s3_rate) / max(1, num_loader_workers)
    consumers = {"train": train["images_per_s"], "refine": refine}
    consumers.update({f"{x:g} img/s": x for x in consumption or ()})
    per_image = model_flops(cfg)
    passes = {
        s: [rates[f"{s}_1"]["images_per_s"], rates[f"{s}_2"]["images_per_s"]]
        for s in ("local", "s3")
    }
    return {
        "preset": preset,
        "batch_size": batch,
        "num_loader_workers": num_loader_workers,
        "num_samples": num_samples,
        "samples_per_shard": samples_per_shard,
        "endpoint": "moto on 127.0.0.1" if server is not None else endpoint_url,
        "loader": rates,
        "local_images_per_s": local_rate,
        "s3_images_per_s": s3_rate,
        "train_images_per_s": train["images_per_s"],
        "ratios": {
            "s3/local": s3_rate / local_rate,
            "loader/train": min(s3_rate, local_rate) / train["images_per_s"],
            "loader/refine": min(s3_rate, local_rate) / refine,
        },
        "targets": TARGETS,
        "refine_images_per_s": refine,
        "decode_images_per_s_per_loader": per_loader,
        "loaders_needed": {name: loaders_needed(x, per_loader) for name, x in consumers.items()},
        "flops": {
            "per_image": {k: per_image[k] for k in ("train", "refine_forward")},
            "peak": peak,
            "train": account(per_image["train"], train["images_per_s"], peak),
            "refine": account(per_image["refine_forward"], refine, peak),
        },
        "trust": trust(passes, steal_since(started)["steal_share"]),
    }


def format_table(result: dict[str, Any]) -> str:
    r, loader = result["ratios"], result["loader"]
    lines = [
        f"bench data: {result['preset']} shards, batch {result['batch_size']}, "
        f"{result['num_loader_workers']} loader process(es), S3 = {result['endpoint']}",
        "| source | images/s | first batch s |",
        "|---|---|---|",
    ]
    for name, row in loader.items():
        lines.append(f"| {name} | {row['images_per_s']:.0f} | {row['first_batch_s']:.2f} |")
    lines.append(
        f"| training consumes (bare loop, 1 thread) | {result['train_images_per_s']:.0f} | |"
    )
    lines.append(
        f"| refine consumes (bare forward, 1 thread) | {result['refine_images_per_s']:.0f} | |"
    )
    for name, target in result["targets"].items():
        verdict = "met" if r[name] >= target else "MISSED"
        lines.append(f"{name}: {r[name]:.2f} (target >= {target}: {verdict})")
    lines.append(f"loader/refine: {r['loader/refine']:.2f}")
    per_loader = result["decode_images_per_s_per_loader"]
    lines.append(
        f"loader processes needed at {per_loader:.0f} decoded images/s each: "
        + ", ".join(f"{n} for {name}" for name, n in result["loaders_needed"].items())
    )
    flops = result["flops"]
    lines += [format_peak(flops["peak"])]
    lines += format_flops(flops["per_image"], {k: flops[k] for k in ("train", "refine")})
    lines.append(format_trust(result["trust"]))
    return "\n".join(lines)
