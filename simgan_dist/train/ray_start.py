"""Starting Ray: join RAY_ADDRESS's cluster when set, else a local instance that listens on loopback only."""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import ray

from simgan_dist.config.verbosity import third_party_verbose
from simgan_dist.errors import InputError
from simgan_dist.train import ray_address, versions

# Ray's services start on the node's address, and for a local instance it resolves 127.0.0.1
# to the machine's reachable address unless "clusters" are off (its Windows/macOS default).
# Off, every gRPC server, agent and metrics port of a local instance binds 127.0.0.1.
# Ray 2.60 has no public setting for this; tests/integration/test_ray_bind.py checks it holds.
_CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"

# How long a job on a cluster waits for the CPUs and GPUs its workers ask for (an autoscaler may
# be adding nodes) before it stops in one line; run.resource_wait_s for train. A local instance
# that simgan started has all it will ever have: a shortfall there stops at once.
RESOURCE_WAIT_S = 600.0
RESOURCE_POLL_S = 5.0
_started_here: str | None = None  # the GCS address of the instance this process started


class RayResourceError(InputError):
    """More workers, CPUs or GPUs asked for than the Ray instance has (or a cluster got in time)."""


def _keeping_sigterm_handler(start: Callable[..., None]) -> Callable[..., None]:
    """ray.init replaces the process's SIGTERM handler with one that exits mid-work (for a local
    instance the driver then dies of SIGABRT with a C++ stack dump, its workers left running).
    A handler the caller installed (the `simgan` command's: SIGTERM as Ctrl-C) is put back."""

    @functools.wraps(start)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        handler = signal.getsignal(signal.SIGTERM)
        try:
            start(*args, **kwargs)
        finally:
            if callable(handler) and threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, handler)

    return wrapper


@_keeping_sigterm_handler
def ensure_ray(num_cpus: int | None = None, connect_wait_s: float | None = None) -> None:
    """Connect to Ray once per process: RAY_ADDRESS's cluster (e.g. under `ray job submit`)
    when set, else start a local instance whose ports all listen on 127.0.0.1. connect_wait_s:
    how long RAY_ADDRESS may take to answer (ray_address.RAY_CONNECT_WAIT_S when None)."""
    if ray.is_initialized():
        return
    # Ray's own INFO lines (the dashboard address, "Started a local Ray instance") and warnings
    # only with `simgan --verbose`; its errors always.
    logging_level = logging.INFO if third_party_verbose() else logging.ERROR
    if os.environ.get("RAY_ADDRESS"):
        wait_s = ray_address.RAY_CONNECT_WAIT_S if connect_wait_s is None else connect_wait_s
        ray_address.wait_for_address(os.environ["RAY_ADDRESS"], wait_s)
        ray.init(num_cpus=num_cpus, logging_level=logging_level)
        return
    versions.require(versions.RAY_CLUSTER_SWITCH)
    from ray._private import ray_constants

    os.environ[_CLUSTER_SWITCH] = "0"  # for processes that import ray afresh (workers, agents)
    ray_constants.ENABLE_RAY_CLUSTER = False  # this process imported ray already
    # Ray's processes (GCS, raylet, workers, actors) inherit the environment ray.init starts
    # them in. RAY_ADDRESS there names this instance, so Ray code that looks for "the" local Ray
    # by itself (Train's PlacementGroupCleaner, through the state API) finds it while another
    # command's local Ray runs on this host too, instead of dying with "Found multiple active
    # Ray instances". The GCS port is picked first, so the address is known before the start;
    # address="local" starts an instance rather than joining the one RAY_ADDRESS names. This
    # process's own environment is left as it was. The dashboard's default host is 127.0.0.1.
    address, port = ray_address.free_local_address()
    with ray_address.environment(RAY_ADDRESS=address, RAY_GCS_SERVER_PORT=str(port)):
        ray.init(address="local", num_cpus=num_cpus, logging_level=logging_level)
    global _started_here
    _started_here = ray.get_runtime_context().gcs_address


def workers_that_fit(per_worker: dict[str, float]) -> int:
    """How many workers asking per_worker ({"CPU": 2, "GPU": 1}) the alive nodes hold in all (a
    worker lives on one node: two nodes of 2 CPUs hold no worker of 4)."""
    asked = {name: amount for name, amount in per_worker.items() if amount > 0}
    total = 0
    for node in ray.nodes():
        if node.get("Alive"):
            held = node.get("Resources", {})
            total += min(int(held.get(name, 0) // amount) for name, amount in asked.items())
    return total


def check_resources(
    num_workers: int, per_worker: dict[str, float], asked: str, wait_s: float = RESOURCE_WAIT_S
) -> None:
    """Return once the Ray instance can hold num_workers workers of per_worker resources; else
    one line (RayResourceError) saying what is asked and what exists: at once on a local
    instance this process started, after wait_s seconds on a cluster. Ray itself would wait
    forever, logging a traceback every minute. asked: the request in the user's words."""
    deadline = time.monotonic() + wait_s
    waiting = False
    while True:
        fits = workers_that_fit(per_worker)
        if fits >= num_workers:
            return
        cluster = ray.cluster_resources()
        has = ", ".join(f"{cluster.get(n, 0):g} {n}" for n, v in per_worker.items() if v > 0)
        has += f" (room for {fits} such worker{'s' if fits != 1 else ''})"
        if _started_here == ray.get_runtime_context().gcs_address:
            raise RayResourceError(
                f"{asked}: the local Ray has {has}; ask for fewer, or run on a cluster "
                "(RAY_ADDRESS)"
            )
        if time.monotonic() >= deadline:
            raise RayResourceError(
                f"{asked}: the Ray cluster still has {has} after waiting {wait_s:g} s for "
                "nodes (run.resource_wait_s)"
            )
        if not waiting:
            print(f"[simgan] {asked}: the Ray cluster has {has}; waiting up to {wait_s:g} s "
                  "for nodes to join", file=sys.stderr, flush=True)  # fmt: skip
            waiting = True
        time.sleep(min(RESOURCE_POLL_S, max(0.0, deadline - time.monotonic())))


def connected() -> bool:
    """Whether this process is connected to Ray (a local instance or a cluster)."""
    return ray.is_initialized()


def disconnect() -> None:
    """Leave Ray: a local instance this process started stops with its workers and actors; on
    a cluster, the job's workers and actors end with it."""
    ray.shutdown()
