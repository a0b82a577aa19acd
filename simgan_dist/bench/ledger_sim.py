"""The refine queue and its done-ledger at scale: re-planning a half-done job of N shards.

A job of N input shards (an input manifest) stopped halfway: N/2 refined shards published under
the output, their N/2 done-records under _refine/done/, and the index segments its driver wrote
every ray_pool.INDEX_EVERY records. The bench then does what a rerun of `simgan refine` does
before it refines anything: take the output's lease, resolve the inputs, read the ledger and
split done from to-do (refine/plan.py), timed, on local disk or an S3 server. The job's files are
laid out directly (bytes as the ledger writes them) so a 100,000-shard job takes seconds to set
up; on the bench's own moto server they go into its store without HTTP, as the only quick way to
make 100,000 objects; everything timed goes over HTTP.
"""

from __future__ import annotations

import math
import shutil
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from simgan_dist.io import urls
from simgan_dist.io.location import Location
from simgan_dist.io.shardio import Manifest, ShardInfo
from simgan_dist.refine import ledger as refine_ledger
from simgan_dist.refine.lease import OutputLease
from simgan_dist.refine.plan import JobPlan, input_shards, plan_job
from simgan_dist.refine.ray_pool import INDEX_EVERY
from simgan_dist.refine.shard import ShardResult

LINEAGE = {
    "checkpoint_id": "checkpoint-000000115200",
    "checkpoint_sha256": "5" * 64,
    "refiner_config_hash": "c" * 16,
}
PUBLISHED = b"refined shard stand-in\n"  # its size is what the ledger checks
NUM_TIMED_WRITES = 20  # done-records written one by one through the real ledger call

Put = Callable[[dict[str, str | bytes]], None]  # relative key -> bytes, written under the job root


def _record(source: str, name: str, samples_per_shard: int) -> dict[str, Any]:
    shard = {"name": name, "num_samples": samples_per_shard, "sha256": "0" * 64,
             "num_bytes": len(PUBLISHED)}  # fmt: skip
    return ShardResult(source, name, samples_per_shard, shard=shard, lineage=dict(LINEAGE),
                       started=time.time(), finished=time.time()).to_dict()  # fmt: skip


def lay_out_job(
    root: str, num_shards: int, samples_per_shard: int, put: Put, *, with_index: bool = True
) -> None:
    """Write the half-done job under root: input/manifest.json, output/ with N/2 shards, their
    done-records and (with_index) the index segments the driver wrote during the run."""
    names = [f"synth-{i:07d}.tar" for i in range(num_shards)]
    infos = tuple(ShardInfo(n, samples_per_shard, "0" * 64, 4_000_000) for n in names)
    manifest = Manifest("synthetic", infos, (1, 28, 28), has_labels=True)
    put({"input/manifest.json": manifest.to_json().encode()})
    done = names[::2]  # every other shard: the workers took them in input order, some slower
    records = [_record(urls.join(urls.join(root, "input"), n), n, samples_per_shard) for n in done]
    for start in range(0, len(done), INDEX_EVERY):
        chunk = records[start : start + INDEX_EVERY]
        objects: dict[str, str | bytes] = {f"output/{r['name']}": PUBLISHED for r in chunk}
        objects.update(
            {f"output/{refine_ledger.DONE_DIR}/{r['name']}.json": refine_ledger.record_bytes(r)
             for r in chunk}
        )  # fmt: skip
        if with_index:
            key = f"output/{refine_ledger.INDEX_DIR}/{refine_ledger.index_name()}"
            objects[key] = refine_ledger.index_bytes(chunk)
        put(objects)


def replan(root: str, options: dict[str, Any]) -> tuple[dict[str, float], JobPlan]:
    """What a rerun does before refining: lease, inputs, ledger; the seconds of each part."""
    base = Location(root, options)
    input_location, output = base.join("input"), base.join("output")
    started = time.perf_counter()
    with OutputLease(output):
        leased = time.perf_counter()
        sources, names = input_shards(input_location, output, False)
        listed = time.perf_counter()
        job = plan_job(input_location, sources, names, output, LINEAGE)
        planned = time.perf_counter()
    times = {"lease_s": leased - started, "inputs_s": listed - leased,
             "ledger_s": planned - listed, "replan_s": planned - started}  # fmt: skip
    return times, job


def write_costs(root: str, options: dict[str, Any], samples_per_shard: int) -> dict[str, float]:
    """Seconds per shard the ledger costs while the job runs: the worker's done-record (the real
    ledger call) and its share of the driver's index segment."""
    output = Location(root, options).join("output-writes")
    records = [_record("src", f"w-{i:05d}.tar", samples_per_shard) for i in range(INDEX_EVERY)]
    started = time.perf_counter()
    for record in records[:NUM_TIMED_WRITES]:
        refine_ledger.write_done(output, record)
    done_s = (time.perf_counter() - started) / NUM_TIMED_WRITES
    started = time.perf_counter()
    refine_ledger.write_index(output, records)
    index_s = (time.perf_counter() - started) / INDEX_EVERY
    # One listing that returns one key: on a real store a constant round trip; moto's grows
    # with every key in the bucket (it scans them all for each page).
    fs, path = output.join(refine_ledger.INDEX_DIR).filesystem()
    started = time.perf_counter()
    fs.invalidate_cache(path)
    fs.ls(path)
    small_list_s = time.perf_counter() - started
    return {"done_record_s": done_s, "index_share_s": index_s, "small_list_s": small_list_s}


def _check(job: JobPlan, num_shards: int) -> None:
    if len(job.done) != num_shards // 2 + num_shards % 2 or len(job.sources) != num_shards:
        raise RuntimeError(
            f"bench control: the plan found {len(job.done)} of {num_shards} shards done"
        )


def simulate_ledger(
    root: str,
    num_shards: int,
    samples_per_shard: int,
    options: dict[str, Any],
    put: Put,
    *,
    measure_memory: bool = False,
    without_index: bool = False,
) -> dict[str, Any]:
    """Lay out a half-done job of num_shards under root, re-plan it twice (the first rerun
    compacts the index to one segment), and time the per-shard writes. without_index also
    re-plans a job whose driver wrote no index (every record fetched), for comparison."""
    started = time.perf_counter()
    lay_out_job(root, num_shards, samples_per_shard, put)
    result: dict[str, Any] = {"num_shards": num_shards, "setup_s": time.perf_counter() - started}
    first, job = replan(root, options)
    _check(job, num_shards)
    again, job = replan(root, options)
    result.update(first)
    result["replan_again_s"] = again["replan_s"]
    result["num_done"], result["num_todo"] = len(job.done), len(job.todo)
    # Listing pages of 1,000 keys the ledger read takes: done/, the output, the index.
    result["num_list_pages"] = 2 * math.ceil(len(job.done) / 1000) + 1
    if measure_memory:  # tracemalloc slows Python down: a pass of its own, not timed
        tracemalloc.start()
        _, job = replan(root, options)
        result["memory_bytes"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        result["bytes_per_shard"] = result["memory_bytes"] / num_shards
    del job
    if without_index:
        bare = urls.join(root, "no-index")
        lay_out_job(bare, num_shards, samples_per_shard, put_under(put, "no-index"),
                    with_index=False)  # fmt: skip
        times, job = replan(bare, options)
        _check(job, num_shards)
        result["replan_no_index_s"] = times["replan_s"]
    result.update(write_costs(root, options, samples_per_shard))
    return result


def put_under(put: Put, prefix: str) -> Put:
    return lambda objects: put({f"{prefix}/{k}": v for k, v in objects.items()})


def local_put(root: Path) -> Put:
    def put(objects: dict[str, str | bytes]) -> None:
        for key, data in objects.items():
            path = root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data if isinstance(data, bytes) else data.encode())

    return put


def remove_local(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
