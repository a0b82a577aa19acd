"""Ray glue for the shard catalogs: one actor per corpus, and the client a training worker uses.

The driver (run_training) starts the actors, so a corpus is listed once per run and the record of
finished shards outlives a worker-group restart. A worker started without them (Ray Tune trials,
in-process runs) builds a local catalog instead: same plan, the record kept per worker.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ray

from simgan_dist.config import Config
from simgan_dist.data.catalog import (
    CATALOG_FILE,
    CORPORA,
    EpochPlan,
    ShardCatalog,
    stream_seed,
    stream_world_size,
)


def _catalog_args(cfg: Config, corpus: str, world_size: int) -> tuple[tuple, dict]:
    location = getattr(cfg.data, corpus)
    args = (location, stream_seed(cfg, corpus), stream_world_size(cfg, world_size))
    kwargs = {
        "storage_options": cfg.data.storage_options,
        "allow_pipe": cfg.data.allow_pipe_urls,
    }
    return args, kwargs


def start_catalogs(cfg: Config) -> dict[str, Any]:
    """One ShardCatalog actor per corpus (no CPU reserved: it only answers small calls).

    The corpora are listed here, in the driver, so a wrong URL or an unreachable endpoint stops
    the job with its own error before any worker starts."""
    actor_cls = ray.remote(num_cpus=0)(ShardCatalog)
    handles = {}
    for corpus in CORPORA:
        args, kwargs = _catalog_args(cfg, corpus, cfg.run.num_workers)
        catalog = ShardCatalog.open(*args, **kwargs)
        handles[corpus] = actor_cls.remote(catalog.location, catalog.plan())
    return handles


class CatalogClient:
    """A worker's view of one corpus's catalog: an actor handle, or a local ShardCatalog."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.is_actor = isinstance(target, ray.actor.ActorHandle)

    def _call(self, method: str, *args: Any) -> Any:
        if self.is_actor:
            return ray.get(getattr(self.target, method).remote(*args))
        return getattr(self.target, method)(*args)

    def plan(self) -> EpochPlan:
        return self._call("plan")

    def record_finished(self, epoch: int, rank: int, url: str) -> None:
        # Synchronous (one small call per shard): at a checkpoint's barrier the record is whole.
        self._call("record_finished", epoch, rank, url)

    def state_dict(self) -> dict[str, Any]:
        return self._call("state_dict")

    def load_state_dict(self, state: dict[str, Any], world_size: int) -> EpochPlan:
        return self._call("load_state_dict", state, world_size)

    def progress(self) -> dict[str, Any]:
        return self._call("progress")


def connect_catalogs(
    handles: dict[str, Any] | None, cfg: Config, world_size: int
) -> dict[str, CatalogClient]:
    if handles:
        return {corpus: CatalogClient(handles[corpus]) for corpus in CORPORA}
    clients = {}
    for corpus in CORPORA:
        args, kwargs = _catalog_args(cfg, corpus, world_size)
        clients[corpus] = CatalogClient(ShardCatalog.open(*args, **kwargs))
    return clients


def restore_catalogs(
    directory: str | Path,
    clients: dict[str, CatalogClient],
    cfg: Config,
    rank: int,
    world_size: int,
) -> None:
    """Put a checkpoint's record back (rank 0 for shared actors, each rank for local catalogs).
    Call on every rank before the streams are built; it ends with a barrier."""
    from simgan_dist.train import dist

    path = Path(directory) / CATALOG_FILE
    if path.exists():
        state = json.loads(path.read_text())
        for corpus, client in clients.items():
            if rank == 0 or not client.is_actor:
                client.load_state_dict(state[corpus], stream_world_size(cfg, world_size))
    dist.barrier()
