"""Ray glue for the shard catalogs: one actor per corpus, and the client a training worker uses.

The driver (run_training) starts the actors, so a corpus is listed once per run and the record of
finished shards outlives a worker-group restart. A worker started without them (Ray Tune trials,
in-process runs) builds a local catalog instead: same plan, the record kept per worker.
"""

from __future__ import annotations

import time
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from simgan_dist.config import Config
from simgan_dist.data.catalog import CORPORA, EpochPlan, ShardCatalog, open_catalog


def start_catalogs(cfg: Config) -> dict[str, Any]:
    """One ShardCatalog actor per corpus (no CPU reserved: it only answers small calls), on the
    driver's node.

    The corpora are listed here, in the driver, so a wrong URL or an unreachable endpoint stops
    the job with its own error before any worker starts."""
    # On the driver's node (the head, under `ray job submit`): an actor on a spot worker would be
    # lost with it when the node is reclaimed, and the record of finished shards with it.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    # A catalog process that dies (OOM, a kill) is restarted with its first plan; the calls in
    # flight fail, the workers restart from the latest checkpoint and rank 0 restores the
    # record of finished shards from it into the new process (CatalogRecord.load_from).
    actor_cls = ray.remote(ShardCatalog).options(
        num_cpus=0, scheduling_strategy=here, max_restarts=-1
    )
    handles = {}
    for corpus in CORPORA:
        catalog = open_catalog(cfg, corpus, cfg.run.num_workers)
        handles[corpus] = actor_cls.remote(catalog.location, catalog.plan())
    return handles


RESTART_WAIT_S = 60.0  # a catalog process restarts in seconds; a longer absence is a failure


class CatalogClient:
    """A worker's view of one corpus's catalog: an actor handle, or a local ShardCatalog."""

    shared = True  # one actor serves every rank: rank 0 alone restores its record

    def __init__(self, target: Any) -> None:
        self.target = target
        self.is_actor = isinstance(target, ray.actor.ActorHandle)

    def _call(self, method: str, *args: Any, wait_for_restart: bool = False) -> Any:
        """The method's result. wait_for_restart: for calls that are safe to repeat (reads,
        restoring a saved record), a catalog that is restarting is waited for, up to
        RESTART_WAIT_S, instead of failing the run a second time right after a restart."""
        if not self.is_actor:
            return getattr(self.target, method)(*args)
        deadline = time.monotonic() + (RESTART_WAIT_S if wait_for_restart else 0.0)
        while True:
            try:
                return ray.get(getattr(self.target, method).remote(*args))
            except ray.exceptions.ActorUnavailableError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)

    def plan(self) -> EpochPlan:
        return self._call("plan", wait_for_restart=True)

    def record_finished(self, epoch: int, rank: int, url: str) -> None:
        # Synchronous (one small call per shard): at a checkpoint's barrier the record is whole.
        self._call("record_finished", epoch, rank, url)

    def state_dict(self) -> dict[str, Any]:
        return self._call("state_dict")

    def load_state_dict(self, state: dict[str, Any], world_size: int) -> EpochPlan:
        return self._call("load_state_dict", state, world_size, wait_for_restart=True)

    def progress(self) -> dict[str, Any]:
        return self._call("progress")


def connect_catalogs(handles: dict[str, Any] | None) -> dict[str, CatalogClient] | None:
    """The workers' clients of the driver's catalog actors; None without them (a Tune trial:
    the session opens a local catalog per corpus)."""
    if not handles:
        return None
    return {corpus: CatalogClient(handles[corpus]) for corpus in CORPORA}
