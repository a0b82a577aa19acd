"""DeepSpeed updaters in one gloo rank: R's step leaves D alone and the reverse, state roundtrips."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as torch_dist

from simgan_dist.config import load_config
from simgan_dist.model.history import HistoryBuffer
from simgan_dist.model.networks import build_discriminator, build_refiner
from simgan_dist.train.dist import free_port
from simgan_dist.train.engine import DeepSpeedUpdater, make_optimizer
from simgan_dist.train.loop import disc_step, refiner_step

pytestmark = pytest.mark.slow  # process groups or ONNX exports: out of the quick tier


@pytest.fixture(scope="module")
def process_group():
    # One group for the module: DeepSpeed keeps the first group it saw in module globals, so
    # engines built under a later group in the same process fail with "not registered".
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("LOCAL_RANK", "0")  # DeepSpeed asserts it; launchers (Ray Train) set it
        torch_dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1
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


def test_compiled_engines_step_as_eager_ones_and_keep_their_keys(process_group) -> None:
    """engine.compile: torch.compile'd R and D inside DeepSpeed engines take the same steps as
    eager ones, and their state_dict keys (what checkpoints hold) are unchanged."""
    cfg = load_config(preset="debug", overrides=["run.num_workers=1", "engine.compile=true"])
    synthetic = torch.rand(8, 1, 28, 28) * 2 - 1
    real = torch.rand(8, 1, 28, 28) * 2 - 1
    nets = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        r_net, d_net = build_refiner(cfg.model), build_discriminator(cfg.model)
        engine_cfg = cfg.engine if compiled else cfg.engine.__class__()
        refiner = DeepSpeedUpdater(
            r_net, make_optimizer(r_net.parameters(), cfg.optim, 0.05), 8, engine_cfg
        )
        disc = DeepSpeedUpdater(
            d_net, make_optimizer(d_net.parameters(), cfg.optim, 0.05), 16, engine_cfg
        )
        assert refiner.engine.is_compiled == compiled
        refiner_step(refiner, disc, synthetic, cfg, adversarial=True)
        disc_step(refiner, disc, synthetic, real, None, 0.0)
        nets[compiled] = (refiner.module.state_dict(), disc.module.state_dict())
    for eager, compiled in zip(nets[False], nets[True], strict=True):
        assert list(eager) == list(compiled)  # no "_orig_mod." prefixes
        for key, value in eager.items():
            torch.testing.assert_close(compiled[key], value, rtol=1e-4, atol=1e-5, msg=key)
