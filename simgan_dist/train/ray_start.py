"""Starting Ray: join RAY_ADDRESS's cluster when set, else a local instance that listens on loopback only."""

from __future__ import annotations

import logging
import os

import ray

from simgan_dist.config.verbosity import third_party_verbose
from simgan_dist.train import versions

# Ray's services start on the node's address, and for a local instance it resolves 127.0.0.1
# to the machine's reachable address unless "clusters" are off (its Windows/macOS default).
# Off, every gRPC server, agent and metrics port of a local instance binds 127.0.0.1.
# Ray 2.60 has no public setting for this; tests/integration/test_ray_bind.py checks it holds.
_CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def ensure_ray(num_cpus: int | None = None) -> None:
    """Connect to Ray once per process: RAY_ADDRESS's cluster (e.g. under `ray job submit`)
    when set, else start a local instance whose ports all listen on 127.0.0.1."""
    if ray.is_initialized():
        return
    # Ray's own INFO lines (the dashboard address, "Started a local Ray instance") and warnings
    # only with `simgan --verbose`; its errors always.
    logging_level = logging.INFO if third_party_verbose() else logging.ERROR
    if os.environ.get("RAY_ADDRESS"):
        ray.init(num_cpus=num_cpus, logging_level=logging_level)
        return
    versions.require(versions.RAY_CLUSTER_SWITCH)
    from ray._private import ray_constants

    os.environ[_CLUSTER_SWITCH] = "0"  # for processes that import ray afresh (workers, agents)
    ray_constants.ENABLE_RAY_CLUSTER = False  # this process imported ray already
    # The dashboard's own default host is 127.0.0.1.
    ray.init(num_cpus=num_cpus, logging_level=logging_level)
