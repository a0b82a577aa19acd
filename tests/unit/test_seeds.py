"""seed_for (issue 28 item 3): one recipe for every draw, a pure function of its parts."""

from __future__ import annotations

import random

import numpy as np
import torch

from simgan_dist.refine.shard import noise_seed
from simgan_dist.seeds import seed_for
from simgan_dist.train.loop import iteration_seed


def test_a_seed_is_a_function_of_its_parts_and_fits_every_seeding_call() -> None:
    assert seed_for(0, "iteration", 1, 64) == seed_for(0, "iteration", 1, 64)
    seeds = {seed_for(s, "iteration", r, n) for s in (0, 1) for r in (0, 1, 2) for n in (0, 8)}
    assert len(seeds) == 12  # no collisions between nearby runs, ranks or positions
    big = seed_for(2**40, "iteration", 7, 10**12)
    assert 0 <= big < 2**63
    torch.manual_seed(big), np.random.default_rng(big), random.Random(big)


def test_every_draw_of_a_run_uses_it() -> None:
    # The loop's and refine's seeds are seed_for's (one recipe, not one per module).
    assert iteration_seed(3, 1, 96) == seed_for(3, "iteration", 1, 96)
    assert noise_seed("part-000001.tar", 2) == seed_for("part-000001.tar", 2)
