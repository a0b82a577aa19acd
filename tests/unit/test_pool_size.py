"""Refine's pool follows the cluster and counts losses per node (issue 29 item 2)."""

from __future__ import annotations

import pytest

from simgan_dist.refine.pool_size import (
    MAX_LOSSES_PER_NODE,
    MAX_NODE_LOSSES,
    LossBudget,
    target_workers,
    workers_that_fit,
)
from simgan_dist.refine.shard import RefineSettings


def test_the_pool_follows_the_clusters_resources() -> None:
    cpu = RefineSettings(threads_per_worker=2)
    assert workers_that_fit(cpu, {"CPU": 2}) == 1  # an autoscaling group at its minimum
    assert workers_that_fit(cpu, {"CPU": 16}) == 8  # after it grew
    assert target_workers(cpu, {"CPU": 16}, num_left=3) == 3  # never more than the shards left
    assert target_workers(RefineSettings(num_workers=5), {"CPU": 16}, num_left=100) == 5
    quarter = RefineSettings(use_gpu=True, gpus_per_worker=0.25)
    assert workers_that_fit(quarter, {"CPU": 32, "GPU": 2}) == 8  # four actors on each GPU
    assert workers_that_fit(RefineSettings(use_gpu=True), {"GPU": 2}) == 2


def test_gpus_per_worker_is_a_share_of_one_gpu() -> None:
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match=r"refine\.gpus_per_worker: must be in \(0, 1\]"):
            RefineSettings(gpus_per_worker=bad)


def test_one_reclaimed_node_is_one_loss_however_many_actors_it_held() -> None:
    budget = LossBudget()
    for _ in range(MAX_LOSSES_PER_NODE):  # four actors of one node at once would exceed a
        budget.record("node-a")  # per-job budget of 3; per node they are one event
    assert budget.allows()
    for i in range(MAX_NODE_LOSSES - 1):
        budget.record(f"node-{i}")
    assert budget.allows() and "on 8 nodes" in budget.describe()
    budget.record("node-last")
    assert not budget.allows()  # more node losses than the job survives


def test_a_node_that_keeps_killing_its_actors_stops_the_job() -> None:
    budget = LossBudget()
    for _ in range(MAX_LOSSES_PER_NODE + 1):
        budget.record("node-oom")
    assert not budget.allows()
