"""The bench's loop_2p: our training loop (train/loop.py, DeepSpeed engines, the global history
buffer) in two plain processes on half the global batch each, images in memory, no Ray.

Between bare_2p (two bare loops, no communication) and ours_2w (the same loop on Ray Train with
shards, loader processes and hooks) it splits what 2 workers lose: loop_2p/bare_2p is the price
of the loop and its per-step collectives (each R and D step all-reduces gradients, each D step
gathers the history buffer: a rank that is preempted makes the other wait), ours_2w/loop_2p the
price of Ray, the streams and the run's outputs on the same cores."""

from __future__ import annotations

import time
from typing import Any

import torch

from simgan_dist.bench.processes import run_two_processes
from simgan_dist.config import Config, from_dict
from simgan_dist.errors import InputError
from simgan_dist.train import dist
from simgan_dist.train.dist import free_port
from simgan_dist.train.loop import LoopState, Phase, train
from simgan_dist.train.malloc_tuning import tune_malloc
from simgan_dist.train.session import build_buffer, build_updaters
from simgan_dist.tune.screen import MemoryBatchSource

WORLD_SIZE = 2
POOL_IMAGES = 2048  # random images per corpus, drawn with replacement (as bare's cycled batches)


def timed_schedule(cfg: Config, num_iters: int) -> dict[str, int]:
    """Schedule fields for a timed run: one step per pretraining phase (not timed), then exactly
    num_iters adversarial iterations (each draws k_g + k_d global batches)."""
    s = cfg.schedule
    return {
        "refiner_pretrain_nimg": s.batch_size,
        "disc_pretrain_nimg": s.batch_size,
        "adversarial_nimg": num_iters * (s.k_g + s.k_d) * s.batch_size,
    }


def _rank_process(
    config: dict, warmup_iters: int, measured_iters: int, port: int, sync: Any, results: Any
) -> None:
    tune_malloc()
    torch.set_num_threads(1)
    cfg = from_dict(config, source="<bench>")
    rank = _take_rank(sync)
    dist.start_loopback_group(rank, WORLD_SIZE, port)
    try:
        r_updater, d_updater = build_updaters(cfg, torch.device("cpu"), "deepspeed", WORLD_SIZE)
        shape = (cfg.model.image_channels, cfg.model.image_height, cfg.model.image_width)
        pool = [torch.rand(POOL_IMAGES, *shape) * 2 - 1 for _ in range(2)]
        batch = cfg.schedule.batch_size // WORLD_SIZE
        source = MemoryBatchSource(pool[0], pool[1], batch, seed=rank)
        timing: dict[str, float] = {"num_adversarial": 0}

        def after_iteration(state: LoopState, phase: Phase, metrics: dict[str, float]) -> None:
            if phase.adversarial:
                timing["num_adversarial"] += 1
                if timing["num_adversarial"] == warmup_iters:
                    dist.barrier()  # both ranks start the clock together
                    timing["start"] = time.perf_counter()

        buffer = build_buffer(cfg, rank, WORLD_SIZE)
        train(r_updater, d_updater, source, cfg, LoopState(), buffer, after_iteration, rank=rank)
        seconds = time.perf_counter() - timing["start"]
        nimg = measured_iters * (cfg.schedule.k_g + cfg.schedule.k_d) * batch
        results.put({"images_per_s": nimg / seconds, "measured_nimg": nimg, "measured_s": seconds})
    finally:
        dist.end_group()


def _take_rank(sync: Any) -> int:
    """0 for one process and 1 for the other: the barrier's wait() returns a distinct index
    to each party."""
    return int(sync.wait())


def loop_pair(cfg: Config, warmup_iters: int, measured_iters: int) -> dict:
    """Images/s of our loop on 2 gloo ranks in 2 processes (1 thread each, CPU), summed."""
    if warmup_iters < 1:
        raise InputError("loop_pair needs at least one warm-up iteration (it starts the clock)")
    config = cfg.replace(
        schedule=timed_schedule(cfg, warmup_iters + measured_iters), run={"num_workers": WORLD_SIZE}
    ).to_dict()
    return run_two_processes(_rank_process, (config, warmup_iters, measured_iters, free_port()))
