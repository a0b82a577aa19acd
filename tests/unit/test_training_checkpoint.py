"""The training checkpoint object: parts saved and restored by name, exact resume with no RNG state."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from simgan_dist.config import load_config
from simgan_dist.model.history import HistoryBuffer
from simgan_dist.train.checkpoint import (
    CheckpointError,
    TrainingCheckpoint,
    load_tensors,
    rank_file,
)
from simgan_dist.train.loop import LoopState, iteration_seed, train
from simgan_dist.train.session import build_updaters

# An R with a noise input: the loop draws from torch's RNG at every R and D step.
NOISE = [
    "run.num_workers=1",
    "optim.optimizer=adam",
    "model.refiner_noise_channels=2",
    "loss.diversity_lambda=0.1",
    "schedule.refiner_pretrain_nimg=16",
    "schedule.disc_pretrain_nimg=16",
]


class CountedBatches:
    """Seeded images indexed by how many were drawn, with the position as a checkpoint part."""

    def __init__(self, batch: int) -> None:
        self.batch, self.num_synthetic, self.num_real = batch, 0, 0

    def _images(self, index: int, offset: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(2 * index + offset)
        return torch.rand(self.batch, 1, 28, 28, generator=gen) * 2 - 1

    def next_synthetic(self) -> torch.Tensor:
        self.num_synthetic += 1
        return self._images(self.num_synthetic, 0)

    def next_real(self) -> torch.Tensor:
        self.num_real += 1
        return self._images(self.num_real, 1).clamp(min=0)

    def state_dict(self) -> dict[str, int]:
        return {"num_synthetic": self.num_synthetic, "num_real": self.num_real}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.num_synthetic, self.num_real = state["num_synthetic"], state["num_real"]


def _run_parts(adversarial_nimg: int, seed: int = 0):
    cfg = load_config(
        preset="debug", overrides=[*NOISE, f"schedule.adversarial_nimg={adversarial_nimg}"]
    )
    cfg = cfg.replace(optim={"refiner_lr": 0.003, "disc_lr": 0.003})
    # seed: other initial weights only; the run's own draws stay run.seed's.
    refiner, disc = build_updaters(cfg.replace(run={"seed": seed}), torch.device("cpu"))
    buffer = HistoryBuffer(32, (1, 28, 28), seed=cfg.run.seed)
    batches = CountedBatches(cfg.schedule.batch_size)
    return cfg, refiner, disc, buffer, batches


def _checkpoint(refiner, disc, buffer, batches, loop, rank=0, world_size=1) -> TrainingCheckpoint:
    return TrainingCheckpoint.of_training(
        rank=rank, world_size=world_size, refiner=refiner, disc=disc, buffer=buffer, loop=loop,
        data=batches,
    )  # fmt: skip


def test_a_resumed_noise_run_equals_an_unbroken_one_without_saved_rng(tmp_path: Path) -> None:
    """Stop after the first adversarial stretch, scramble torch's RNG, rebuild everything from
    fresh objects and the checkpoint, continue: the weights equal the unbroken run's bit for bit."""
    cfg, refiner, disc, buffer, batches = _run_parts(64)
    straight = train(refiner, disc, batches, cfg, LoopState(), buffer)
    straight_weights = {k: v.clone() for k, v in refiner.module.state_dict().items()}

    cfg, refiner, disc, buffer, batches = _run_parts(32)
    stopped = train(refiner, disc, batches, cfg, LoopState(), buffer)
    _checkpoint(refiner, disc, buffer, batches, stopped).save(tmp_path, cfg)
    position = batches.state_dict()
    saved = load_tensors(tmp_path / rank_file(0))
    assert set(saved) == {"refiner_optim", "disc_optim", "buffer", "data_position"}  # no RNG

    cfg, refiner, disc, buffer, batches = _run_parts(64, seed=123)  # other initial weights
    torch.manual_seed(999)  # whatever the process drew before does not matter
    state = LoopState()
    _checkpoint(refiner, disc, buffer, batches, state).load(tmp_path)
    assert state == stopped and batches.state_dict() == position != {}
    resumed = train(refiner, disc, batches, cfg, state, buffer)
    assert resumed == straight
    for key, value in straight_weights.items():
        assert torch.equal(refiner.module.state_dict()[key], value), key


def test_iteration_seed_differs_by_rank_and_position_and_fits_torch() -> None:
    seeds = {iteration_seed(s, r, n) for s in (0, 1) for r in (0, 1, 2) for n in (0, 8, 16)}
    assert len(seeds) == 18
    torch.manual_seed(iteration_seed(2**40, 7, 10**12))  # large values stay a valid seed


def test_another_world_size_keeps_only_unsharded_optimizer_state(tmp_path: Path, caplog) -> None:
    cfg, refiner, disc, buffer, batches = _run_parts(32)
    state = train(refiner, disc, batches, cfg, LoopState(), buffer)
    for rank in (0, 1):  # a 2-worker checkpoint
        _checkpoint(refiner, disc, buffer, batches, state, rank, 2).save(tmp_path, cfg)
    saved_optim = refiner.optimizer.state_dict()["state"]

    cfg, refiner, disc, buffer, batches = _run_parts(32, seed=5)
    loop = LoopState()
    with caplog.at_level("WARNING"):
        _checkpoint(refiner, disc, buffer, batches, loop).load(tmp_path)
    assert loop == state
    assert batches.state_dict() == {"num_synthetic": 0, "num_real": 0}  # streams start fresh
    assert buffer.num_filled == 0
    restored = refiner.optimizer.state_dict()["state"]
    assert torch.equal(restored[0]["exp_avg"], saved_optim[0]["exp_avg"])
    assert "saved with 2 workers, resumed with 1: kept refiner_optim, disc_optim" in caplog.text


def test_a_missing_part_is_named(tmp_path: Path) -> None:
    cfg, refiner, disc, buffer, batches = _run_parts(32)
    _checkpoint(refiner, disc, None, None, LoopState()).save(tmp_path, cfg)  # no buffer, no data
    with pytest.raises(CheckpointError, match=r"rank-0000.pt: has no part 'buffer'"):
        _checkpoint(refiner, disc, buffer, batches, LoopState()).load(tmp_path)
