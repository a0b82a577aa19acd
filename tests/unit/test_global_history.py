"""The global history buffer on 2 real gloo ranks: uniform draws over both slices, mixed pushes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
from scipy.stats import chisquare

from simgan_dist.train import dist
from simgan_dist.train.dist import free_port
from simgan_dist.train.global_history import GlobalHistoryBuffer

CAPACITY = 40  # 20 slots per rank
NUM_DRAWS = 1500
PER_DRAW = 4


def _worker(rank: int, port: int, out: dict) -> None:
    torch_dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2
    )
    buf = GlobalHistoryBuffer(
        CAPACITY, (1, 1, 1), seed=3, rank=rank, world_size=2, all_gather=dist.all_gather_tensor
    )
    # Images carry their source rank: 100 + rank.
    sources = []
    for _ in range(12):  # 4 pushes of 4 per rank fill 20 slots each (5 pushes), then replace
        buf.push(torch.full((4, 1, 1, 1), 100.0 + rank))
        sources.append(
            sorted(set(buf.slice.read(torch.arange(buf.slice.num_filled)).flatten().tolist()))
        )
    # Label every slot with its global id to count draws per slot.
    local_ids = torch.arange(20) + rank * 20
    buf.slice.write(torch.arange(20), local_ids.float().reshape(20, 1, 1, 1))
    drawn = [buf.sample(PER_DRAW).flatten() for _ in range(NUM_DRAWS)]
    out[rank] = {
        "sources": sources,
        "drawn": torch.cat(drawn).long().tolist(),
        "num_filled": buf.num_filled,
    }
    torch_dist.destroy_process_group()


def _run() -> dict:
    # A spawned (not forked) manager: a fork of this process would copy the live Ray driver
    # of the session and hang later Ray Train runs.
    manager = mp.get_context("spawn").Manager()
    out = manager.dict()
    mp.spawn(_worker, args=(free_port(), out), nprocs=2, join=True)
    return dict(out)


@pytest.mark.slow  # out of the quick tier
def test_global_buffer_on_two_ranks() -> None:
    out = _run()
    assert out[0]["num_filled"] == out[1]["num_filled"] == CAPACITY
    # No slice only ever sees its own rank's images: both sources appear in each.
    for rank in (0, 1):
        assert out[rank]["sources"][-1] == [100.0, 101.0], out[rank]["sources"]
    # Draws of both ranks together are uniform over all 40 slots of both slices.
    drawn = np.array(out[0]["drawn"] + out[1]["drawn"])
    counts = np.bincount(drawn, minlength=CAPACITY)
    assert len(counts) == CAPACITY
    assert chisquare(counts).pvalue > 1e-3, counts
    # Each rank's own draws reach the other slice in proportion to its fill (half).
    for rank in (0, 1):
        mine = np.array(out[rank]["drawn"])
        other = np.mean((mine // 20) != rank)
        assert 0.45 < other < 0.55, other
    # Within one step, the two ranks' draws are distinct slots (one global draw without
    # replacement, split between them).
    first0, first1 = out[0]["drawn"][:PER_DRAW], out[1]["drawn"][:PER_DRAW]
    assert not set(first0) & set(first1)


def test_one_rank_behaves_like_a_local_buffer() -> None:
    buf = GlobalHistoryBuffer(
        8, (1, 2, 2), seed=0, rank=0, world_size=1, all_gather=dist.all_gather_tensor
    )
    for step in range(4):
        buf.push(torch.full((3, 1, 2, 2), float(step)))
    assert buf.num_filled == 8
    assert buf.sample(5).shape == (5, 1, 2, 2)
    state = buf.state_dict()
    again = GlobalHistoryBuffer(
        8, (1, 2, 2), seed=9, rank=0, world_size=1, all_gather=dist.all_gather_tensor
    )
    again.load_state_dict(state)
    assert torch.equal(again.sample(6), buf.sample(6))
