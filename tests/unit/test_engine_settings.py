"""DeepSpeed settings from our config on 2 gloo ranks (CPU): ZeRO 1/2 and gradient accumulation
match plain data parallel, clipping bounds the update, bf16 autocast trains, lr schedules follow
their formula, and ZeRO optimizer state survives a weights_only checkpoint."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp

from simgan_dist.config import load_config
from simgan_dist.model.networks import build_discriminator, build_refiner
from simgan_dist.train.dist import free_port
from simgan_dist.train.engine import DeepSpeedUpdater, make_lr_schedule, make_optimizer
from simgan_dist.train.loop import LoopState, optimizer_steps, train

pytestmark = pytest.mark.slow  # process groups or ONNX exports: out of the quick tier

GLOBAL_BATCH = 8
SETTINGS = {
    "zero0": [],
    "zero1": ["engine.zero_stage=1"],
    "zero2": ["engine.zero_stage=2"],
    "accum2": ["engine.grad_accum_steps=2"],
    "clip": ["engine.grad_clip=0.01"],
    "bf16": ["engine.precision=bf16"],
    "cosine": ["optim.lr_schedule=warmup_cosine", "optim.warmup_steps=2"],
}


class SlicedBatches:
    """Fixed seeded global batches; each rank takes its rows (the same data for any setting)."""

    def __init__(self, rank: int, world: int, micro: int) -> None:
        self.synthetic = torch.Generator().manual_seed(0)
        self.real = torch.Generator().manual_seed(1)
        self.rank, self.world, self.micro = rank, world, micro

    def _next(self, gen: torch.Generator) -> torch.Tensor:
        # One image at a time, so any micro-batch size cuts the same global sequence.
        images = [torch.rand(1, 1, 28, 28, generator=gen) for _ in range(self.micro * self.world)]
        batch = torch.cat(images) * 2 - 1
        return batch[self.rank * self.micro : (self.rank + 1) * self.micro]

    def next_synthetic(self) -> torch.Tensor:
        return self._next(self.synthetic)

    def next_real(self) -> torch.Tensor:
        return self._next(self.real).clamp(min=0)


def _updaters(cfg, world: int):
    torch.manual_seed(0)
    r_net, d_net = build_refiner(cfg.model), build_discriminator(cfg.model)
    micro = cfg.schedule.batch_size // (world * cfg.engine.grad_accum_steps)
    r_steps, d_steps = optimizer_steps(cfg.schedule)
    r_opt = make_optimizer(r_net.parameters(), cfg.optim, cfg.optim.refiner_lr)
    d_opt = make_optimizer(d_net.parameters(), cfg.optim, cfg.optim.disc_lr)
    refiner = DeepSpeedUpdater(
        r_net, r_opt, micro, cfg.engine, make_lr_schedule(r_opt, cfg.optim, r_steps)
    )
    disc = DeepSpeedUpdater(
        d_net, d_opt, 2 * micro, cfg.engine, make_lr_schedule(d_opt, cfg.optim, d_steps)
    )
    return refiner, disc, micro


def _config(extra: list[str]):
    return load_config(
        preset="debug",
        overrides=[
            f"schedule.batch_size={GLOBAL_BATCH}",
            "schedule.history_fraction=0",
            "run.num_workers=2",
            "optim.refiner_lr=0.05",
            "optim.disc_lr=0.05",
            *extra,
        ],
    )


def _worker(rank: int, port: int, out: dict) -> None:
    import os

    os.environ["LOCAL_RANK"] = "0"
    torch_dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2
    )
    torch.set_num_threads(1)
    for name, extra in SETTINGS.items():
        cfg = _config(extra)
        refiner, disc, micro = _updaters(cfg, 2)
        start = [p.detach().clone() for p in refiner.module.parameters()]
        train(refiner, disc, SlicedBatches(rank, 2, micro), cfg, LoopState())
        if rank == 0:
            out[name] = {
                "refiner": {k: v.detach().clone() for k, v in refiner.module.state_dict().items()},
                "disc": {k: v.detach().clone() for k, v in disc.module.state_dict().items()},
                "start": start,
                "lr": refiner.optimizer.param_groups[0]["lr"],
                "steps": optimizer_steps(cfg.schedule),
            }
    # ZeRO-1 state through a weights_only checkpoint: resumed steps equal uninterrupted ones.
    cfg = _config(["engine.zero_stage=1", "optim.optimizer=adam"])
    refiner, disc, micro = _updaters(cfg, 2)
    batch_source = SlicedBatches(rank, 2, micro)
    for _ in range(2):
        refiner.step(refiner.forward(batch_source.next_synthetic()).pow(2).mean())
    weights = {k: v.clone() for k, v in refiner.module.state_dict().items()}
    saved = io.BytesIO()
    torch.save(refiner.optimizer_state_dict(), saved)
    later = [batch_source.next_synthetic() for _ in range(2)]
    for x in later:
        refiner.step(refiner.forward(x).pow(2).mean())
    straight = {k: v.clone() for k, v in refiner.module.state_dict().items()}
    fresh, _, _ = _updaters(cfg, 2)
    fresh.module.load_state_dict(weights)
    saved.seek(0)
    fresh.load_optimizer_state_dict(torch.load(saved, weights_only=True))
    for x in later:
        fresh.step(fresh.forward(x).pow(2).mean())
    if rank == 0:
        out["zero1_resume"] = {"straight": straight, "resumed": fresh.module.state_dict()}
    torch_dist.destroy_process_group()


@pytest.fixture(scope="module")
def results() -> dict:
    port = free_port()
    # A spawned (not forked) manager: a fork of this process would copy the live Ray driver
    # of the session and hang later Ray Train runs.
    manager = mp.get_context("spawn").Manager()
    out = manager.dict()
    mp.spawn(_worker, args=(port, out), nprocs=2, join=True)
    return dict(out)


def _close(a: dict, b: dict, atol: float) -> None:
    for key, value in a.items():
        torch.testing.assert_close(b[key], value, rtol=0, atol=atol, msg=key)


@pytest.mark.parametrize("name", ["zero1", "zero2", "accum2"])
def test_matches_plain_data_parallel(results: dict, name: str) -> None:
    for net in ("refiner", "disc"):
        _close(results["zero0"][net], results[name][net], atol=1e-5)


def test_clipping_bounds_each_update(results: dict) -> None:
    def moved(name: str) -> float:
        end = list(results[name]["refiner"].values())
        return math.sqrt(
            sum(
                float((e - s).pow(2).sum())
                for e, s in zip(end, results[name]["start"], strict=True)
            )
        )

    num_steps = results["clip"]["steps"][0]
    # SGD with lr 0.05 and max grad norm 0.01: each R step moves R by at most 5e-4.
    assert moved("clip") <= num_steps * 0.05 * 0.01 * 1.001
    assert moved("zero0") > 10 * moved("clip")


def test_bf16_autocast_trains_close_to_fp32(results: dict) -> None:
    for key, value in results["bf16"]["refiner"].items():
        assert torch.isfinite(value).all()
        torch.testing.assert_close(value, results["zero0"]["refiner"][key], rtol=0, atol=0.05)
    assert any(
        not torch.equal(v, results["zero0"]["refiner"][k])
        for k, v in results["bf16"]["refiner"].items()
    )


def test_warmup_cosine_reaches_zero(results: dict) -> None:
    # The horizon is the whole schedule, so the last R step ends with lr factor cos(pi) -> 0.
    r_steps = results["cosine"]["steps"][0]
    assert r_steps > 2
    assert results["cosine"]["lr"] == pytest.approx(0.0, abs=1e-9)
    assert results["zero0"]["lr"] == pytest.approx(0.05)


def test_zero1_optimizer_state_resumes_exactly(results: dict) -> None:
    _close(results["zero1_resume"]["straight"], results["zero1_resume"]["resumed"], atol=1e-6)
