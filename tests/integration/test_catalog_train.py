"""Training streams both corpora from a bucket (loopback S3) through the shard catalogs: an epoch on 2
workers uses every synthetic sample exactly once, also when a worker is killed mid-epoch."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from simgan_dist.config import load_config
from simgan_dist.data.build import build_real_digits, build_synthetic_digits
from simgan_dist.io.location import Location
from simgan_dist.train.ray_train import run_training
from simgan_dist.train.runs import start_run

pytestmark = pytest.mark.ray

NUM_SYNTHETIC = 480


def trained_keys(log: Path) -> list[tuple[str, int]]:
    """(key, epoch) of the batches the final weights trained on, from a KeyLog file: a line whose
    batch number is not above the last one kept is a resume, and replaces what followed it."""
    kept: list[dict] = []
    for line in log.read_text().splitlines():
        row = json.loads(line)
        while kept and kept[-1]["batch"] >= row["batch"]:
            kept.pop()
        kept.append(row)
    assert [r["batch"] for r in kept] == list(range(1, len(kept) + 1)), "a batch went missing"
    return [(k, e) for r in kept for k, e in zip(r["keys"], r["epochs"], strict=True)]


def test_trained_keys_drops_what_a_resume_replaced(tmp_path: Path) -> None:
    rows = [(1, "a"), (2, "b"), (3, "c"), (2, "b2"), (3, "c2"), (4, "d")]
    log = tmp_path / "k.jsonl"
    log.write_text(
        "".join(json.dumps({"batch": n, "keys": [k], "epochs": [0]}) + "\n" for n, k in rows)
    )
    assert [k for k, _ in trained_keys(log)] == ["a", "b2", "c2", "d"]


def test_epoch_exactly_once_from_a_bucket_with_a_killed_worker(
    ray_local, s3_server, s3_bucket, live_actors, tmp_path: Path
) -> None:
    options = {"endpoint_url": s3_server}
    root = "s3://simgan-test/corpora"
    build_synthetic_digits(Location(f"{root}/synth", options), NUM_SYNTHETIC, 40, seed=1)
    build_real_digits(
        Location(f"{root}/real", options), Location(f"{root}/real-eval", options), 1000
    )
    overrides = {
        "data.synthetic": f"{root}/synth",
        "data.real": f"{root}/real",
        "data.storage_options": json.dumps(options),
        "data.record_keys": "true",
        "data.shuffle_window": 8,  # epoch 0's samples leave the buffer soon after it ends
        "schedule.adversarial_nimg": 960,
        "run.checkpoint_every_nimg": 96,
        "run.log_every_nimg": 96,
        "run.max_failures": 1,
        "run.storage_path": tmp_path,
        "run.name": "bucket-epoch",
    }
    cfg = load_config(preset="debug", overrides=[f"{k}={v}" for k, v in overrides.items()])
    cfg, run_dir = start_run(cfg)
    results = []
    thread = threading.Thread(target=lambda: results.append(run_training(cfg, run_dir)))
    thread.start()
    deadline = time.time() + 300
    while not (run_dir / "checkpoint_manager_snapshot.json").exists() and time.time() < deadline:
        time.sleep(0.2)
    workers = live_actors()
    assert workers, "no live training workers found"
    os.kill(workers[0].pid, signal.SIGKILL)
    thread.join(timeout=600)
    assert results and results[0].error is None, results

    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    resumed = [r["cur_nimg"] for r in rows if r.get("event") == "resumed"]
    assert len(resumed) == 1 and 0 < resumed[0] < NUM_SYNTHETIC  # killed mid-epoch 0
    per_rank = [trained_keys(run_dir / "keys" / f"rank-{r:04d}.jsonl") for r in range(2)]
    epoch0 = [k for keys in per_rank for k, e in keys if e == 0]
    counts = Counter(epoch0)
    assert len(counts) == NUM_SYNTHETIC and set(counts.values()) == {1}, counts.most_common(3)
    # The two ranks read disjoint halves of that epoch, balanced to within one shard (40).
    ranks0 = [{k for k, e in keys if e == 0} for keys in per_rank]
    assert not ranks0[0] & ranks0[1] and abs(len(ranks0[0]) - len(ranks0[1])) <= 40


def test_resume_with_fewer_workers_redeals_the_unfinished_shards(
    ray_local, debug_overrides, tmp_path: Path
) -> None:
    """2 workers stop mid-epoch; the run resumes on 1 worker (one was lost for good): the epoch's
    shards that nobody finished go to the remaining worker, and none is read twice."""
    from simgan_dist.cli import main

    args = ["train", "--preset", "debug"]
    # 400 digits in 4 shards of 100: at 240 images each rank has finished its first shard.
    fields = {
        "run.name": "shrink",
        "schedule.adversarial_nimg": 192,
        "run.checkpoint_every_nimg": 10_000,
    }
    for item in debug_overrides(**fields):
        args += ["--set", item]
    main(args)
    run_dir = tmp_path / "shrink"
    first = json.loads(next(run_dir.glob("checkpoint-*/catalog.json")).read_text())["synthetic"]
    done_before = [u for urls in first["finished"]["0"].values() for u in urls]
    assert 1 <= len(done_before) < 4, first["finished"]

    main(["train", "--resume", str(run_dir), "--set", "run.num_workers=1",
          "--set", "schedule.adversarial_nimg=800"])  # fmt: skip
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["cur_nimg"] for r in rows if r.get("event") == "resumed"] == [240]
    final = sorted(run_dir.glob("checkpoint-*"))[-1]
    record = json.loads((final / "catalog.json").read_text())["synthetic"]
    epoch0 = [u for urls in record["finished"]["0"].values() for u in urls]
    assert len(epoch0) == 4 and len(set(epoch0)) == 4, record["finished"]["0"]
    # The finished ones were not read again: each rank's record goes on from where it was (the
    # ranks' order in the record is the order of their first reports, a race).
    for rank, urls in first["finished"]["0"].items():
        assert record["finished"]["0"][rank][: len(urls)] == urls, record["finished"]["0"]
    assert record["world_size"] == 1 and "1" in record["finished"]  # and epoch 1 went on
