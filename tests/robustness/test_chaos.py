"""Seeded chaos for refine (issue 18): driver SIGKILLs at random moments and an input object deleted
and restored mid-run, on the local S3 server; the output ends with every key exactly once."""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import numpy as np
import pytest

from simgan_dist.config import load_config
from simgan_dist.data.reader import read_samples
from simgan_dist.io.location import Location
from simgan_dist.io.shardio import read_manifest, resolve_shard_urls, write_shards
from simgan_dist.refine.ray_pool import refine_shards
from simgan_dist.refine.shard import RefineSettings
from simgan_dist.train.session import save_initial_checkpoint

pytestmark = pytest.mark.ray

SEED = 18
NUM_KILLS = 3
NUM_SHARDS, PER_SHARD = 24, 40
BUCKET = "simgan-test"


def _samples(n: int):
    rng = np.random.default_rng(SEED)
    for i in range(n):
        yield f"c{i:05d}", rng.integers(0, 256, (28, 28), dtype=np.uint8), {"label": i % 10}


def _done_records(client, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    return [k for k in keys if ".tmp-" not in k]


def _wait_for_no_live_workers(live_workers) -> None:
    """Ray reaps a SIGKILLed driver's actors a moment later; until then one may still publish a
    shard, so the done records are counted only once every RefineWorker is gone."""
    deadline = time.monotonic() + 60
    while live_workers("RefineWorker") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not live_workers("RefineWorker"), "a killed driver's RefineWorker outlived it by 60 s"


def test_random_kills_and_a_vanishing_object_end_with_every_key_once(
    ray_local, live_actors, s3_server, s3_bucket, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    options = {"endpoint_url": s3_server}
    source, output = f"s3://{BUCKET}/chaos-in", f"s3://{BUCKET}/chaos-out"
    write_shards(_samples(NUM_SHARDS * PER_SHARD), Location(source, options), "chaos", PER_SHARD)
    cfg = load_config(
        preset="debug", overrides=["model.refiner_features=48", "model.refiner_blocks=2"]
    )
    checkpoint = save_initial_checkpoint(cfg, tmp_path / "run" / "checkpoint-000000000000")
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    cmd = [sys.executable, "-m", "simgan_dist.cli", "refine", "--checkpoint", str(checkpoint),
           "--input", source, "--output", output, "--storage-option", f"endpoint_url={s3_server}",
           "--num-workers", "1", "--threads-per-worker", "1", "--batch-size", "16", "--no-progress"]  # fmt: skip
    vanish_round = rng.randrange(NUM_KILLS)
    vanished = []
    for round_ in range(NUM_KILLS):
        before = len(_done_records(client, "chaos-out/_refine/done/"))
        driver = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
        )
        deadline = time.monotonic() + 120
        while (
            len(_done_records(client, "chaos-out/_refine/done/")) == before
            and driver.poll() is None
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        hidden = None
        if round_ == vanish_round:  # an input shard not yet done disappears, then comes back
            done = {
                k.rsplit("/", 1)[-1].removesuffix(".json")
                for k in _done_records(client, "chaos-out/_refine/done/")
            }
            waiting = [
                f"chaos-{i:06d}.tar" for i in range(NUM_SHARDS) if f"chaos-{i:06d}.tar" not in done
            ]
            if waiting:
                hidden = rng.choice(waiting)
                body = client.get_object(Bucket=BUCKET, Key=f"chaos-in/{hidden}")["Body"].read()
                client.delete_object(Bucket=BUCKET, Key=f"chaos-in/{hidden}")
                vanished.append(hidden)
        time.sleep(rng.uniform(0.0, 0.5))  # a kill mid-shard or between shards
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        _wait_for_no_live_workers(live_actors)
        if hidden is not None:
            client.put_object(Bucket=BUCKET, Key=f"chaos-in/{hidden}", Body=body)

    num_done = len(_done_records(client, "chaos-out/_refine/done/"))
    assert vanished and 0 < num_done < NUM_SHARDS  # the chaos did land mid-job
    settings = RefineSettings(batch_size=16, num_workers=1, threads_per_worker=1)
    summary = refine_shards(
        checkpoint, source, output, settings, storage_options=options, progress=False
    )
    assert not summary["failed_shards"] and summary["num_input_shards"] == NUM_SHARDS
    assert summary["num_shards_skipped_already_done"] == num_done
    refined = Location(output, options)
    urls = resolve_shard_urls(refined)
    keys = collections.Counter(k for k, _, _, _ in read_samples(urls, store=refined))
    assert keys == collections.Counter({k: 1 for k, _, _ in _samples(NUM_SHARDS * PER_SHARD)})
    assert read_manifest(Location(output, options)).num_samples == NUM_SHARDS * PER_SHARD
    assert "chaos-out/_refine/lease.json" not in _done_records(client, "chaos-out/_refine/")
