"""Shard catalog: disjoint, balanced, seeded deals per epoch; progress record; re-deal on resize."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from simgan_dist.data.catalog import EpochPlan, ShardCatalog, deal, shard_counts
from simgan_dist.io.shardio import write_shard, write_shards


def _corpus(root: Path, sizes: list[int]) -> Path:
    """Shards of the given sizes, with a manifest (written shard by shard, uneven)."""
    from simgan_dist.io.shardio import Manifest, write_manifest

    img = np.zeros((4, 4), np.uint8)
    infos = []
    for i, size in enumerate(sizes):
        samples = ((f"k{i:03d}-{j:03d}", img, {"i": j}) for j in range(size))
        infos.append(write_shard(root / f"part-{i:06d}.tar", samples))
    write_manifest(root, Manifest("uneven", tuple(infos), (1, 4, 4), True))
    return root


def test_deal_is_a_balanced_partition() -> None:
    import random

    urls = [f"u{i}" for i in range(10)]
    counts = [100, 90, 80, 10, 10, 10, 10, 10, 10, 10]
    parts = deal(urls, counts, 3, random.Random(0))
    assert sorted(u for p in parts for u in p) == sorted(urls)
    loads = [sum(counts[urls.index(u)] for u in p) for p in parts]
    assert max(loads) - min(loads) <= max(counts)


def test_plan_epochs_disjoint_complete_and_reshuffled(tmp_path: Path) -> None:
    root = _corpus(tmp_path, [50, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5])
    catalog = ShardCatalog.open(str(root), seed=3, world_size=2)
    plan = catalog.plan()
    assert list(plan.counts) == [50] + [5] * 10  # read from the manifest
    deals = []
    for epoch in range(4):
        shares = [plan.for_rank(epoch, r).urls for r in range(2)]
        assert not set(shares[0]) & set(shares[1])
        assert sorted(shares[0] + shares[1]) == sorted(plan.urls)
        loads = [sum(plan.num_samples(u) for u in s) for s in shares]
        assert abs(loads[0] - loads[1]) <= 50, loads  # balanced by samples, not by shard count
        deals.append(shares)
    assert len({tuple(d[0]) for d in deals}) > 1  # a new deal each epoch
    # Pure: another catalog (another process) computes the same deal.
    again = ShardCatalog.open(str(root), seed=3, world_size=2).plan()
    assert again.for_rank(2, 1) == plan.for_rank(2, 1)


def test_fewer_shards_than_ranks_strides_samples(tmp_path: Path) -> None:
    root = _corpus(tmp_path, [6])
    plan = ShardCatalog.open(str(root), seed=0, world_size=3).plan()
    shares = [plan.for_rank(0, r) for r in range(3)]
    assert all(s.urls == shares[0].urls and s.stride == 3 for s in shares)
    assert [s.offset for s in shares] == [0, 1, 2]


def test_record_state_and_redeal_after_losing_a_worker(tmp_path: Path) -> None:
    root = _corpus(tmp_path, [4] * 8)
    catalog = ShardCatalog.open(str(root), seed=1, world_size=3)
    plan = catalog.plan()
    for r in range(3):  # every rank finished its first shard of epoch 0
        catalog.record_finished(0, r, plan.for_rank(0, r).urls[0])
    assert catalog.progress()["num_finished"] == 3
    state = json.loads(json.dumps(catalog.state_dict()))  # goes through a JSON checkpoint

    same = ShardCatalog.open(str(root), seed=1, world_size=3)
    assert same.load_state_dict(state, world_size=3) == plan  # same workers: same plan

    fewer = ShardCatalog.open(str(root), seed=1, world_size=3)
    new_plan = fewer.load_state_dict(state, world_size=2)
    left = set(catalog.unfinished(0))
    assert len(left) == 5 and new_plan.start_epoch == 0
    shares = [new_plan.for_rank(0, r).urls for r in range(2)]
    assert not set(shares[0]) & set(shares[1]) and set(shares[0]) | set(shares[1]) == left
    # Later epochs are dealt over the 2 remaining workers as usual.
    later = [new_plan.for_rank(1, r).urls for r in range(2)]
    assert sorted(later[0] + later[1]) == sorted(plan.urls)


def test_counts_without_manifest_and_plan_checks(tmp_path: Path) -> None:
    img = np.zeros((4, 4), np.uint8)
    write_shards(((f"a{i}", img, None) for i in range(6)), tmp_path / "m", "s", 2)
    write_shard(tmp_path / "loose" / "x.tar", [("b0", img, None)])
    urls = [str(tmp_path / "m" / "s-000000.tar"), str(tmp_path / "loose" / "x.tar")]
    assert shard_counts(urls) == [2, 1]
    with pytest.raises(FileNotFoundError):
        ShardCatalog.open(str(tmp_path / "nothing-here"), seed=0, world_size=1)
    assert EpochPlan(("a",), (1,), 0, 1).for_rank(5, 0).urls == ("a",)
