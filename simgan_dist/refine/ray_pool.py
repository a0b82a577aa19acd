"""Offline refinement on Ray: a pool of refiner actors fed shard by shard, exactly once, resumable.

Why actors fed whole shards, rather than Ray Data or one task per shard: the unit of exactly-once
is the shard (one output per input, under the input's name, then a done-record). Ray Data's
write_webdataset names outputs by dataset id and its checkpointing crashes on resume with
WebDataset input, and its blocks split a shard's samples across writers, so it would need this
shard bookkeeping anyway, plus a mapping back from blocks to shards. One task per shard would
load R once per shard; an actor loads it once (weights via the object store, so workers never
need the checkpoint's filesystem), keeps its torch threads and GPU context, and holds
settings.shards_per_worker shards at once so their reading and writing overlap R (refine.py).
A lost actor is replaced and its shards requeued; a published shard is never redone.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import ray
import torch
from tqdm import tqdm

from simgan_dist.config import ModelConfig
from simgan_dist.config.credentials import check_storage_options
from simgan_dist.data.pipeline import MAX_SKIPS_KEPT
from simgan_dist.errors import InputError, SimganError, kind
from simgan_dist.io import urls
from simgan_dist.io.location import Location
from simgan_dist.io.progress import progress_bar
from simgan_dist.refine import ledger as refine_ledger
from simgan_dist.refine.lease import OutputLease
from simgan_dist.refine.plan import input_shards, plan_job
from simgan_dist.refine.pool_size import LossBudget, target_workers
from simgan_dist.refine.shard import RefineSettings, ShardRefiner
from simgan_dist.refine.source import check_input_images, open_refiner
from simgan_dist.train.ray_metrics import RefineMetrics
from simgan_dist.train.ray_start import check_resources, ensure_ray

log = logging.getLogger(__name__)

POLL_S = 1.0  # progress refresh when no shard finishes
RESIZE_EVERY_S = 10.0  # how often the pool looks at the cluster's resources again
INDEX_EVERY = 1000  # done-records copied into one ledger index segment (ledger.py)


class RefineError(SimganError, RuntimeError):
    """The job stopped (bad sample with on_bad_sample=stop, unwritable output, ...)."""


class RefineWorker:
    """One refiner per worker process; refine() calls run in the "work" group, up to
    shards_per_worker at once, while progress() answers from its own thread. Made a Ray actor
    class in _run_pool, since concurrency groups cannot be sized in .options()."""

    def __init__(
        self,
        weights: dict[str, torch.Tensor],
        model: ModelConfig,
        settings: RefineSettings,
        lineage: dict[str, str],
    ) -> None:
        torch.set_num_threads(settings.threads_per_worker)
        self.refiner = ShardRefiner(weights, model, settings, lineage)

    @ray.method(concurrency_group="work")
    def refine(self, source: Location, output: Location, expected: int | None) -> dict[str, Any]:
        return self.refiner.refine_shard(source, output, expected).to_dict()

    @ray.method(concurrency_group="progress")
    def progress(self) -> int:
        return sum(self.refiner.in_progress.values())

    @ray.method(concurrency_group="progress")
    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()


def refine_shards(
    checkpoint: str | Path,
    input_location: str,
    output: str | Path,
    settings: RefineSettings | None = None,
    *,
    storage_options: dict[str, Any] | None = None,
    allow_pipe: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Refine every input shard into output/<same name>, skipping those already done; then
    write output/manifest.json and the report. Returns the summary (also in the report)."""
    started = time.perf_counter()
    settings = settings or RefineSettings()
    options = dict(storage_options or {})
    check_storage_options(options)
    # One set of options reaches the input, the output and the checkpoint, as the CLI's.
    source = Location.of(input_location, options)
    out = Location(urls.absolute(str(output)), options)
    output = out.url
    sources, names = input_shards(source, out, allow_pipe)
    loaded = open_refiner(Location(str(checkpoint), options))
    model, checkpoint_dir = loaded.model, loaded.origin
    check_input_images(loaded, source, sources[0])  # before Ray starts
    if settings.num_variants > 1 and model.refiner_noise_channels == 0:
        raise InputError(
            f"--variants {settings.num_variants} needs a refiner with a noise input "
            f"(model.refiner_noise_channels > 0); {checkpoint_dir} has none, so its copies "
            "would all be the same"
        )
    lineage = dict(loaded.lineage)
    if settings.num_variants > 1:  # a rerun with another count must not mix into this output
        lineage["num_variants"] = str(settings.num_variants)
    refine_ledger.probe_writable(out)  # before any work: fail fast on bad output
    # Held from here to the end: a second job on this output is refused before it writes.
    with OutputLease(out) as lease:
        job = plan_job(source, sources, names, out, lineage)
        records, done, todo, counts = job.records, job.done, job.todo, job.counts
        total = None  # for the bar's ETA: known when the input's manifest counts every shard
        if counts and all(urls.basename(s) in counts for s in todo):
            total = sum(counts[urls.basename(s)] for s in todo) * settings.num_variants

        results: list[dict[str, Any]] = []
        try:
            if todo:
                ensure_ray()
                weights = loaded.refiner.state_dict()
                bar = progress_bar(total, "refine", enabled=progress)
                with bar:
                    _run_pool(
                        todo, source, out, weights, model, settings, lineage, bar, results,
                        counts or {}, lease,
                    )  # fmt: skip
        except BaseException as err:
            # Shards still in flight when the job stopped may have finished: count what the
            # done-records say, not only the results collected before the error.
            with contextlib.suppress(Exception):
                records = {**records, **refine_ledger.read_done(out)}
            finished_late = {n for n in names if n in records and n not in done} - {
                r["name"] for r in results
            }
            summary = _summary(output, records, results, names, done, started,
                               str(checkpoint_dir), finished_late)  # fmt: skip
            summary["error"] = f"{kind(err)}: {err}"
            with contextlib.suppress(Exception):  # the output may be what failed; err says more
                refine_ledger.write_report(out, summary)
            raise

        records.update({r["name"]: r for r in results if not r["failed"]})
        shape = (model.image_channels, model.image_height, model.image_width)
        refine_ledger.assemble_manifest(out, names, records, shape)
        refine_ledger.remove_temporaries(out)
        summary = _summary(output, records, results, names, done, started, str(checkpoint_dir))
        summary["report"] = refine_ledger.write_report(out, summary)
        print(format_summary(summary), file=sys.stderr, flush=True)
        if summary["failed_shards"]:
            failed = summary["failed_shards"]
            raise RefineError(
                f"{len(failed)} input shards could not be read to their end and were not refined "
                f"(first: {failed[0]}); the others are done: rerun the same command to refine these"
            )
        return summary


def _run_pool(
    todo: list[str],
    source: Location,
    output: Location,
    weights: dict[str, torch.Tensor],
    model: ModelConfig,
    settings: RefineSettings,
    lineage: dict[str, str],
    bar: tqdm,
    results: list[dict[str, Any]],
    counts: dict[str, int],
    lease: OutputLease,
) -> None:
    """Feed shards to the actors, shards_per_worker in flight each, until all are done; append
    each shard's result to results. todo: shard URLs on source's store. Without --num-workers the pool follows the cluster's
    resources (pool_size.target_workers, looked at every RESIZE_EVERY_S). A lost actor's shards
    go back in the queue and it is replaced while the cluster still holds it; the job gives up
    when the losses exceed pool_size.LossBudget (counted per node-loss event)."""
    if settings.use_gpu and not ray.cluster_resources().get("GPU"):
        raise RefineError("use_gpu: the Ray cluster has no GPU")
    num_workers = target_workers(settings, ray.cluster_resources(), len(todo))
    # A worker asking for more CPUs than the cluster has would never start.
    cluster_cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    # More workers than fit would hold their shards forever: one line instead (bounded on a cluster).
    cpus = min(settings.threads_per_worker, cluster_cpus)
    gpus = settings.gpus_per_worker if settings.use_gpu else 0
    check_resources(num_workers, {"CPU": cpus, "GPU": gpus},
                    f"--num-workers {num_workers} workers of {cpus} CPUs")  # fmt: skip
    groups = {"work": settings.shards_per_worker, "progress": 1}
    worker = ray.remote(  # type: ignore[call-overload]
        concurrency_groups=groups
    )(
        RefineWorker
    ).options(
        num_cpus=cpus,
        num_gpus=gpus,
        max_restarts=0,  # replaced below instead: a restart would need its arguments kept (ray#53727)
    )
    weights_ref = ray.put(weights)  # once in the object store, whatever the number of actors

    def start() -> Any:
        return worker.remote(weights_ref, model, settings, lineage)

    actors = [start() for _ in range(num_workers)]
    nodes = [actor.node_id.remote() for actor in actors]  # where each runs, for LossBudget
    queue, in_flight = deque(todo), dict[Any, tuple[Any, Any]]()
    images_done = num_indexed = 0
    budget, resized_at = LossBudget(), time.monotonic()
    metrics, pool_started = RefineMetrics(str(output)), time.monotonic()

    def target() -> int:
        return target_workers(settings, ray.cluster_resources(), len(queue) + len(in_flight))

    def grow() -> None:
        nonlocal resized_at
        resized_at = time.monotonic()
        while not settings.num_workers and queue and len(actors) < target():
            log.info("the cluster grew: refine worker %d starts", len(actors) + 1)
            actors.append(start())
            nodes.append(actors[-1].node_id.remote())

    def index(at_least: int) -> None:
        # Copies of the records the workers wrote, so a re-plan need not fetch them one by one.
        nonlocal num_indexed
        if len(results) - num_indexed >= at_least:
            fresh = [r for r in results[num_indexed:] if not r["failed"]]
            refine_ledger.write_index(output, fresh)
            num_indexed = len(results)

    def feed(actor: Any) -> None:
        held = sum(1 for _, a in in_flight.values() if a is actor)
        for _ in range(settings.shards_per_worker - held):
            if queue:
                shard = queue.popleft()
                expected = counts.get(urls.basename(shard))
                in_flight[actor.refine.remote(source.at(shard), output, expected)] = (shard, actor)

    try:
        while in_flight or queue:
            lease.check()
            if time.monotonic() - resized_at >= RESIZE_EVERY_S:
                grow()
            for actor in actors:
                feed(actor)
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=POLL_S)
            for ref in ready:
                shard, actor = in_flight.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayTaskError as err:  # raised in refine_shard itself
                    cause = err.cause if err.cause is not None else err
                    raise RefineError(
                        f"{shard} (refined into {output}): {kind(cause)}: {cause}"
                    ) from cause
                except ray.exceptions.RayActorError as err:  # the process died: OOM, node lost
                    queue.appendleft(shard)  # its temporary is never published
                    slot = next((i for i, a in enumerate(actors) if a is actor), None)
                    if slot is not None:  # the first of its shards to report the death
                        budget.record(_node_of(nodes[slot]))
                        if not budget.allows():
                            raise RefineError(f"{shard}: {budget.describe()}: {err}") from err
                        if len(actors) > target():  # the cluster shrank: so does the pool
                            log.warning("refine worker lost (%s); the pool shrinks", err)
                            del actors[slot], nodes[slot]
                        else:
                            log.warning("refine worker lost (%s); starting another", err)
                            actors[slot] = start()
                            nodes[slot] = actors[slot].node_id.remote()
                    continue
                results.append(result)
                images_done += result["num_samples"] + result["num_skipped"]
                index(INDEX_EVERY)
            num_failed = sum(1 for r in results if r["failed"])
            metrics(num_done=len(results) - num_failed, num_failed=num_failed,
                    num_images=images_done, wall_s=time.monotonic() - pool_started,
                    lease_age_s=lease.age_s())  # fmt: skip
            bar.set_postfix_str(f"shards {len(results)}/{len(todo)}", refresh=False)
            bar.update(max(0, images_done + _in_progress(actors) - bar.n))
    finally:
        for actor in actors:
            ray.kill(actor)
        with contextlib.suppress(Exception):  # the output may be what failed; the records stand
            index(1)


def _node_of(ref: Any) -> str:
    """The node a lost actor ran on, if it said so before it died ("unknown" otherwise)."""
    ready, _ = ray.wait([ref], timeout=0)
    if not ready:
        return "unknown"
    try:
        return str(ray.get(ready[0]))
    except ray.exceptions.RayError:
        return "unknown"


def _in_progress(actors: list[Any]) -> int:
    """Images refined so far in the shards the actors hold (0 for one starting or restarting)."""
    refs = [a.progress.remote() for a in actors]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=POLL_S)
    total = 0
    for ref in ready:
        try:
            total += ray.get(ref)
        except ray.exceptions.RayError:
            pass
    return total


def _summary(
    output: str,
    records: dict[str, dict],
    results: list[dict],
    names: list[str],
    done_before: set[str],
    started: float,
    checkpoint: str,
    finished_late: set[str] | None = None,
) -> dict[str, Any]:
    """finished_late: shards this run finished whose results it never collected (it stopped)."""
    fresh = {r["name"]: r for r in results if not r.get("failed")}
    fresh.update({n: records[n] for n in finished_late or ()})
    everything = [fresh.get(n) or records[n] for n in names if n in fresh or n in done_before]
    skipped = [s for r in everything for s in r["skipped"]]
    lost = [r.get("num_lost") for r in everything if r.get("damaged")]
    refined = sum(r["num_samples"] for r in fresh.values())
    wall_s = time.perf_counter() - started
    return {
        "output": output,
        "num_images": sum(r["num_samples"] for r in everything),
        "num_shards": sum(1 for r in everything if r["shard"]),
        "num_input_shards": len(names),
        "num_shards_skipped_already_done": len(done_before),
        "num_images_refined": refined,
        "num_shards_refined": len(fresh),
        "num_skipped_samples": sum(r["num_skipped"] for r in everything),
        "skipped": skipped[:MAX_SKIPS_KEPT],
        "empty_shards": [r["source"] for r in everything if not r["shard"]],
        # Broke off part-way: published with the samples before the damage (see ShardResult).
        "damaged_shards": [r["damaged"] for r in everything if r.get("damaged")],
        "num_lost_samples": None if None in lost else sum(n or 0 for n in lost),
        # Not read to their end for another reason: not done, a rerun refines them.
        "failed_shards": [r["failed"] for r in results if r.get("failed")],
        "wall_s": round(wall_s, 2),
        "images_per_s": round(refined / wall_s, 1) if wall_s > 0 else None,
        "checkpoint": checkpoint,
    }


def format_summary(summary: dict[str, Any]) -> str:
    return (
        f"[refine] {summary['num_images']} images in {summary['num_shards']} shards at "
        f"{summary['output']} ({summary['num_shards_skipped_already_done']} shards done before); "
        f"skipped {summary['num_skipped_samples']} bad samples; "
        f"{len(summary['damaged_shards'])} damaged and {len(summary['failed_shards'])} "
        "unreadable shards; this run refined "
        f"{summary['num_images_refined']} images in {summary['wall_s']:.1f} s = "
        f"{summary['images_per_s']} images/s"
    )
