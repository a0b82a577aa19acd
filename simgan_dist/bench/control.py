"""`simgan bench control`: the control plane at scale, simulated on this machine, in one run.

- catalog: the training shard catalog (catalog_sim.py) for N shards over W workers;
- ledger: re-planning a half-done refine job of N shards (ledger_sim.py), on local disk and on
  an S3 server (moto's on 127.0.0.1, started here, unless --s3-endpoint names another);
- the work it is weighed against, measured in the same run: the seconds one training worker
  spends on one shard of the bundled size (its samples over the bare one-thread training loop's
  images/s, an upper bound on speed, so the share is not flattered) and the seconds one refine
  worker spends on it (the bare refiner forward's images/s).

Targets (issue 17): control-plane work per shard at most 1% of the worker's time on that shard;
re-planning a half-done 100,000-shard job in at most 60 s; memory linear in shards, stated as
bytes per shard.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from simgan_dist.bench.bare import bare_loop_one_thread
from simgan_dist.bench.catalog_sim import simulate_catalog
from simgan_dist.bench.data import bench_s3
from simgan_dist.bench.ledger_sim import Put, local_put, remove_local, simulate_ledger
from simgan_dist.bench.refine import bare_forward
from simgan_dist.bench.train import plan
from simgan_dist.config import load_config
from simgan_dist.io.urls import filesystem
from simgan_dist.model.networks import build_refiner
from simgan_dist.refine.shard import RefineSettings, ShardRefiner

TARGETS = {"overhead_pct": 1.0, "replan_s": 60.0, "replan_at_shards": 100_000}
BUCKET = "simgan-bench-control"
WORKER_SECONDS = 3.0  # per timing of the refiner forward
WARMUP_CALLS = 10  # actor calls before the timed ones


def worker_shard_seconds(preset: str, samples_per_shard: int) -> dict[str, float]:
    """Seconds one worker spends on one shard: training (bare loop) and refining (forward)."""
    cfg = load_config(preset=preset)
    schedule = plan(cfg, 10 * cfg.schedule.batch_size * (cfg.schedule.k_g + cfg.schedule.k_d))
    train = bare_loop_one_thread(
        cfg, torch.device("cpu"), schedule["warmup_iters"], schedule["measured_iters"]
    )
    settings = RefineSettings(threads_per_worker=1)
    refiner = ShardRefiner(build_refiner(cfg.model).state_dict(), cfg.model, settings, lineage={})
    shape = (settings.batch_size, cfg.model.image_channels, cfg.model.image_height,
             cfg.model.image_width)  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        refine_ips = bare_forward(refiner, torch.rand(shape) * 2 - 1, WORKER_SECONDS)
    finally:
        torch.set_num_threads(threads)
    return {
        "train_images_per_s": train["images_per_s"],
        "refine_images_per_s": refine_ips,
        "train_shard_s": samples_per_shard / train["images_per_s"],
        "refine_shard_s": samples_per_shard / refine_ips,
    }


@contextlib.contextmanager
def s3_store(endpoint: str | None) -> Iterator[tuple[dict[str, Any], Any, str]]:
    """(storage options, a Put maker for a prefix, what the endpoint is) on a fresh bucket."""
    server, options = bench_s3(endpoint)
    fs, _ = filesystem(f"s3://{BUCKET}", options)
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)

    def put_maker(prefix: str) -> Put:
        if server is not None:
            return _moto_put(prefix)

        def put(objects: dict[str, str | bytes]) -> None:
            fs.pipe({f"{BUCKET}/{prefix}/{k}": v for k, v in objects.items()})

        return put

    try:
        yield (
            options,
            put_maker,
            "moto on 127.0.0.1" if server is not None else options["endpoint_url"],
        )
    finally:
        if server is not None:
            server.stop()
        else:
            with contextlib.suppress(FileNotFoundError):
                fs.rm(BUCKET, recursive=True)


def _moto_put(prefix: str) -> Put:
    """Objects straight into our own moto server's store: HTTP PUTs to moto manage about 150 a
    second here, too slow to make 100,000 of them for a bench."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["global"]

    def put(objects: dict[str, str | bytes]) -> None:
        for key, data in objects.items():
            body = data if isinstance(data, bytes) else data.encode()
            backend.put_object(BUCKET, f"{prefix}/{key}", body)

    return put


def actor_call_seconds(num_calls: int) -> float:
    """Seconds per record_finished through the catalog's Ray actor (the client training workers
    use), from num_calls calls after a few untimed ones: the hop a worker pays per shard."""
    import ray

    from simgan_dist.bench.catalog_sim import simulated_urls
    from simgan_dist.data.catalog import EpochPlan, ShardCatalog
    from simgan_dist.train.ray_catalog import CatalogClient
    from simgan_dist.train.ray_start import ensure_ray

    ensure_ray()
    urls = simulated_urls(num_calls)
    plan = EpochPlan(tuple(urls), (1,) * num_calls, seed=0, world_size=1)
    actor: Any = ray.remote(num_cpus=0)(ShardCatalog).remote("bench", plan)
    client = CatalogClient(actor)
    try:
        for url in urls[:WARMUP_CALLS]:
            client.record_finished(0, 0, url)
        started = time.perf_counter()
        for url in urls:
            client.record_finished(1, 0, url)
        return (time.perf_counter() - started) / num_calls
    finally:
        ray.kill(actor)


def bench_control(
    num_shards: list[int],
    num_workers: int = 1024,
    samples_per_shard: int = 2000,
    preset: str = "digits",
    s3_endpoint: str | None = None,
    s3: bool = True,
    no_index_max: int = 2000,
    actor_calls: int = 200,
) -> dict[str, Any]:
    """Every figure of the module doc, for each size in num_shards. actor_calls > 0 also times
    the Ray actor hop of a record call (a local Ray is started for it) and counts it per shard."""
    started = time.perf_counter()
    work = worker_shard_seconds(preset, samples_per_shard)
    actor_s = actor_call_seconds(actor_calls) if actor_calls > 0 else None
    catalog = [simulate_catalog(n, num_workers, samples_per_shard) for n in num_shards]
    for row in catalog:
        if actor_s is not None:  # the record call goes through the actor, not in-process
            row["per_shard_s"] += actor_s - row["record_finished_s"]
        row["overhead_pct"] = 100 * row["per_shard_s"] / work["train_shard_s"]
    ledger: dict[str, list[dict[str, Any]]] = {"local": []}
    with tempfile.TemporaryDirectory(prefix="simgan-bench-control-") as tmp:
        for n in num_shards:
            root = Path(tmp) / f"n{n}"
            ledger["local"].append(simulate_ledger(
                str(root), n, samples_per_shard, {}, local_put(root), measure_memory=True,
                without_index=n <= no_index_max,
            ))  # fmt: skip
            remove_local(root)
    endpoint = None
    if s3:
        ledger["s3"] = []
        with s3_store(s3_endpoint) as (options, put_maker, endpoint):
            for n in num_shards:
                ledger["s3"].append(simulate_ledger(
                    f"s3://{BUCKET}/n{n}", n, samples_per_shard, options, put_maker(f"n{n}"),
                    without_index=n <= no_index_max,
                ))  # fmt: skip
    for rows in ledger.values():
        for row in rows:
            row["per_shard_s"] = (
                row["done_record_s"] + row["index_share_s"] + row["replan_s"] / row["num_shards"]
            )
            row["overhead_pct"] = 100 * row["per_shard_s"] / work["refine_shard_s"]
    return {
        "preset": preset,
        "num_workers": num_workers,
        "samples_per_shard": samples_per_shard,
        "cpu_count": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "s3_endpoint": endpoint,
        "work": work,
        "actor_call_s": actor_s,
        "catalog": catalog,
        "ledger": ledger,
        "targets": TARGETS,
        "wall_s": time.perf_counter() - started,
    }


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def format_control_table(r: dict[str, Any]) -> str:
    w, t = r["work"], r["targets"]
    lines = [
        f"simgan bench control: {r['num_workers']} simulated workers, {r['samples_per_shard']} "
        f"samples per shard, preset {r['preset']}; machine: {r['cpu_count']} CPUs, load average "
        f"(1 min) {r['loadavg'][0]:.2f}",
        f"one worker on one shard: training {w['train_shard_s']:.2f} s "
        f"({w['train_images_per_s']:.0f} images/s, bare loop, 1 thread), refining "
        f"{w['refine_shard_s']:.3f} s ({w['refine_images_per_s']:.0f} images/s, bare forward)",
        "",
        "shard catalog (per worker: its deal of an epoch, one record call per shard, the record "
        "saved at a checkpoint)"
        + (
            f"; Ray actor hop of a record call {r['actor_call_s'] * 1e3:.2f} ms, counted per shard"
            if r["actor_call_s"] is not None
            else "; Ray actor hop not measured"
        ),
        "| shards | deal s/worker | record us/call | checkpoint s (MB) | resume s | re-deal s "
        "| bytes/shard | per shard ms | % of training |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in r["catalog"]:
        lines.append(
            f"| {c['num_shards']:,} | {c['for_rank_s']:.3f} | {c['record_finished_s'] * 1e6:.2f} "
            f"| {c['checkpoint_s']:.3f} ({c['checkpoint_bytes'] / 1e6:.1f}) | {c['resume_s']:.3f} "
            f"| {c['redeal_s']:.3f} | {c['bytes_per_shard']:.0f} | {c['per_shard_s'] * 1e3:.3f} "
            f"| {c['overhead_pct']:.4f}% |"
        )
    lines.append("")
    lines.append(
        "refine ledger: re-planning a half-done job (lease, inputs, ledger), then per shard "
        "its done-record, its share of an index segment and of the plan"
    )
    lines += [
        "| store | shards | re-plan s (lease / inputs / ledger) | again s | no index s "
        "| list pages | 1-key list s | bytes/shard | done-record ms | per shard ms "
        "| % of refining |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for store, rows in r["ledger"].items():
        for g in rows:
            no_index = f"{g['replan_no_index_s']:.2f}" if "replan_no_index_s" in g else "-"
            per_byte = f"{g['bytes_per_shard']:.0f}" if "bytes_per_shard" in g else "-"
            lines.append(
                f"| {store} | {g['num_shards']:,} | {g['replan_s']:.2f} ({g['lease_s']:.2f} / "
                f"{g['inputs_s']:.2f} / {g['ledger_s']:.2f}) | {g['replan_again_s']:.2f} "
                f"| {no_index} | {g['num_list_pages']} | {g['small_list_s']:.3f} | {per_byte} "
                f"| {g['done_record_s'] * 1e3:.2f} "
                f"| {g['per_shard_s'] * 1e3:.3f} | {g['overhead_pct']:.2f}% |"
            )
    if r["s3_endpoint"]:
        lines.append(f"S3 = {r['s3_endpoint']}")
    lines.append("")
    worst_catalog = max(c["overhead_pct"] for c in r["catalog"])
    lines.append(
        f"catalog overhead, worst size: {worst_catalog:.4f}% of a training shard (target <= "
        f"{t['overhead_pct']}%: {_verdict(worst_catalog <= t['overhead_pct'])})"
    )
    for store, rows in r["ledger"].items():
        worst = max(g["overhead_pct"] for g in rows)
        lines.append(
            f"ledger overhead ({store}), worst size: {worst:.2f}% of a refine shard (target <= "
            f"{t['overhead_pct']}%: {_verdict(worst <= t['overhead_pct'])})"
        )
        at = [g for g in rows if g["num_shards"] == t["replan_at_shards"]]
        if at:
            lines.append(
                f"re-plan of {t['replan_at_shards']:,} shards, half done ({store}): "
                f"{at[0]['replan_s']:.1f} s (target <= {t['replan_s']:.0f} s: "
                f"{_verdict(at[0]['replan_s'] <= t['replan_s'])})"
            )
    lines.append(f"bench wall time {r['wall_s']:.0f} s")
    return "\n".join(lines)
