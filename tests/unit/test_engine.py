"""DeepSpeed updaters in one gloo rank: R's step leaves D alone and the reverse, state roundtrips."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as torch_dist

from simgan_dist.config import load_config
from simgan_dist.model.history import HistoryBuffer
from simgan_dist.model.networks import build_discriminator, build_refiner
from simgan_dist.train.engine import DeepSpeedUpdater, make_optimizer
from simgan_dist.train.loop import disc_step, refiner_step


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def process_group(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LOCAL_RANK", "0")  # DeepSpeed asserts it; launchers (and Ray Train) set it
    torch_dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1
    )
    yield
    torch_dist.destroy_process_group()


def _snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _unchanged(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return all(torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))


def test_deepspeed_steps_touch_only_their_network(process_group) -> None:
    cfg = load_config(preset="debug", overrides=["run.num_workers=1"])
    torch.manual_seed(0)
    r_net, d_net = build_refiner(cfg.model), build_discriminator(cfg.model)
    refiner = DeepSpeedUpdater(r_net, make_optimizer(r_net.parameters(), cfg.optim, 0.05), 8)
    disc = DeepSpeedUpdater(d_net, make_optimizer(d_net.parameters(), cfg.optim, 0.05), 16)
    synthetic = torch.rand(8, 1, 28, 28) * 2 - 1
    real = torch.rand(8, 1, 28, 28) * 2 - 1

    d_before, r_before = _snapshot(disc.module), _snapshot(refiner.module)
    refiner_step(refiner, disc, synthetic, cfg, adversarial=True)
    assert _unchanged(d_before, disc.module)
    assert not _unchanged(r_before, refiner.module)
    assert all(p.requires_grad for p in disc.module.parameters())

    d_before, r_before = _snapshot(disc.module), _snapshot(refiner.module)
    disc_step(refiner, disc, synthetic, real, HistoryBuffer(16, (1, 28, 28), seed=0), 0.5)
    assert _unchanged(r_before, refiner.module)
    assert not _unchanged(d_before, disc.module)

    # A second R step after a D step: no "gradient computed twice", D still untouched.
    d_before = _snapshot(disc.module)
    refiner_step(refiner, disc, synthetic, cfg, adversarial=True)
    assert _unchanged(d_before, disc.module)

    state = refiner.optimizer_state_dict()
    refiner.load_optimizer_state_dict(state)
    assert refiner.optimizer_state_dict()["optimizer"]["param_groups"][0]["lr"] == 0.05
