"""How many refine actors a cluster holds now, and when a lost one is worth replacing (Ray-free).

A pool sized once at the start never grows on an autoscaling cluster that starts at its minimum,
and a budget of replacements per job is spent by one reclaimed node that held several actors.
So the pool follows the cluster's resources while it runs, and losses are counted per node-loss
event: every actor lost on one node is one event.
"""

from __future__ import annotations

from collections.abc import Mapping

from simgan_dist.refine.shard import RefineSettings

MAX_NODE_LOSSES = 8  # node-loss events (reclaims, crashes) a job survives
MAX_LOSSES_PER_NODE = 3  # actors lost on one node that stays (OOM, a crashing process) per job


def workers_that_fit(settings: RefineSettings, resources: Mapping[str, float]) -> int:
    """Actors the cluster's resources hold: one per gpus_per_worker of its GPUs with use_gpu,
    else one per threads_per_worker of its CPUs (at least 1: a pool of 0 would never finish)."""
    if settings.use_gpu:
        return max(1, int(resources.get("GPU", 0) / settings.gpus_per_worker + 1e-9))
    return max(1, int(resources.get("CPU", 1)) // settings.threads_per_worker)


def target_workers(settings: RefineSettings, resources: Mapping[str, float], num_left: int) -> int:
    """The pool's size now: --num-workers when given, else what the cluster holds; never more
    than the shards left to hand out."""
    wanted = settings.num_workers or workers_that_fit(settings, resources)
    return max(1, min(wanted, num_left))


class LossBudget:
    """Lost actors, counted per node: a new node's losses are one more event, repeated losses on
    one node count against that node. allows() says whether the job may go on."""

    def __init__(self) -> None:
        self.per_node: dict[str, int] = {}

    def record(self, node_id: str) -> None:
        self.per_node[node_id] = self.per_node.get(node_id, 0) + 1

    def allows(self) -> bool:
        return len(self.per_node) <= MAX_NODE_LOSSES and all(
            n <= MAX_LOSSES_PER_NODE for n in self.per_node.values()
        )

    def describe(self) -> str:
        return f"{sum(self.per_node.values())} refine workers lost on {len(self.per_node)} nodes"
