"""The shard catalog at scale, simulated in this process: N shards dealt to W workers.

The catalog's own methods are called as W training workers would call them (no Ray: the actor
hop is the same small call whatever N is). Per epoch each worker computes its share of the deal
once (EpochPlan.for_rank, in its loader process), reports each shard it finishes
(record_finished, one actor call per shard), and rank 0 saves the record at each checkpoint
(state_dict to JSON). A resume with the same worker count restores the record; one after losing a
worker re-deals the current epoch's unfinished shards.
"""

from __future__ import annotations

import json
import random
import time
import tracemalloc
from typing import Any

from simgan_dist.data.catalog import EpochPlan, ShardCatalog, deal

NUM_TIMED_RANKS = 4  # for_rank is timed on a few ranks: each worker runs it alone, in parallel


def simulated_urls(num_shards: int) -> list[str]:
    """Shard URLs shaped like a real corpus's in a bucket."""
    return [f"s3://simgan-corpora/digits-synth/synth-{i:07d}.tar" for i in range(num_shards)]


def _catalog(num_shards: int, num_workers: int, samples_per_shard: int) -> ShardCatalog:
    urls = simulated_urls(num_shards)
    plan = EpochPlan(tuple(urls), (samples_per_shard,) * num_shards, seed=0, world_size=num_workers)
    return ShardCatalog("s3://simgan-corpora/digits-synth", plan)


def _finish_half(catalog: ShardCatalog, num_workers: int) -> list[list[str]]:
    """Every worker finishes the first half of its share, in round-robin order across workers."""
    plan = catalog.plan()
    shares = deal(list(plan.urls), list(plan.counts), num_workers, random.Random("sim"))
    longest = max(len(s) for s in shares)
    for step in range(longest // 2 + longest % 2):
        for rank, share in enumerate(shares):
            if step < len(share) // 2 + len(share) % 2:
                catalog.record_finished(0, rank, share[step])
    return shares


def simulate_catalog(num_shards: int, num_workers: int, samples_per_shard: int) -> dict[str, Any]:
    """Times (s) of each catalog operation for one run of num_shards over num_workers, half an
    epoch done, and the memory the catalog holds then (tracemalloc, in a separate pass)."""
    catalog = _catalog(num_shards, num_workers, samples_per_shard)
    plan = catalog.plan()
    started = time.perf_counter()
    for rank in range(min(NUM_TIMED_RANKS, num_workers)):
        share = plan.for_rank(0, rank)
    for_rank_s = (time.perf_counter() - started) / min(NUM_TIMED_RANKS, num_workers)
    shards_per_worker = max(1, num_shards // num_workers)

    started = time.perf_counter()
    _finish_half(catalog, num_workers)
    num_recorded = sum(len(u) for u in catalog.finished.get(0, {}).values())
    record_s = (time.perf_counter() - started) / max(1, num_recorded)

    started = time.perf_counter()
    saved = json.dumps(catalog.state_dict())
    checkpoint_s = time.perf_counter() - started

    started = time.perf_counter()
    progress = catalog.progress()
    progress_s = time.perf_counter() - started

    state = json.loads(saved)
    resumed = _catalog(num_shards, num_workers, samples_per_shard)
    started = time.perf_counter()
    resumed.load_state_dict(state, num_workers)
    resume_s = time.perf_counter() - started

    shrunk = _catalog(num_shards, num_workers, samples_per_shard)
    started = time.perf_counter()
    redealt = shrunk.load_state_dict(state, num_workers - 1 if num_workers > 1 else 1)
    redeal_s = time.perf_counter() - started
    num_redealt = sum(len(r) for r in redealt.redealt.get(0, ()))

    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    held = _catalog(num_shards, num_workers, samples_per_shard)
    _finish_half(held, num_workers)
    held.plan().for_rank(0, 0)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    held_bytes = sum(s.size_diff for s in after.compare_to(before, "filename"))
    del held

    return {
        "num_shards": num_shards,
        "num_workers": num_workers,
        "shards_per_worker": shards_per_worker,
        "num_recorded": num_recorded,
        "for_rank_s": for_rank_s,
        "share_len": len(share.urls),
        "record_finished_s": record_s,
        "checkpoint_s": checkpoint_s,
        "checkpoint_bytes": len(saved),
        "progress_s": progress_s,
        "progress_finished": progress["num_finished"],
        "resume_s": resume_s,
        "redeal_s": redeal_s,
        "num_redealt": num_redealt,
        "memory_bytes": held_bytes,
        "bytes_per_shard": held_bytes / num_shards,
        # What one worker pays per shard it reads: its share of the deal, one record call, and
        # the wait for rank 0's save of the record at a checkpoint (counted as one per epoch).
        "per_shard_s": (for_rank_s + checkpoint_s) / shards_per_worker + record_s,
    }
