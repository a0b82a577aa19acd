"""GPU path (marked gpu, skipped without CUDA): device placement, bf16 autocast, channels_last,
and NCCL collectives for the global history buffer."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as torch_dist

from simgan_dist.config import load_config
from simgan_dist.model.networks import build_discriminator, build_refiner
from simgan_dist.train import dist
from simgan_dist.train.dist import free_port
from simgan_dist.train.engine import DeepSpeedUpdater, make_optimizer
from simgan_dist.train.global_history import GlobalHistoryBuffer
from simgan_dist.train.loop import disc_step, refiner_step

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture
def nccl_group(monkeypatch: pytest.MonkeyPatch):
    port = free_port()
    monkeypatch.setenv("LOCAL_RANK", "0")
    torch.cuda.set_device(0)
    torch_dist.init_process_group(
        "nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1
    )
    yield
    torch_dist.destroy_process_group()


@pytest.mark.parametrize(
    "precision,channels_last", [("fp32", False), ("bf16", True), ("fp16", True)]
)
def test_steps_on_gpu(nccl_group, precision: str, channels_last: bool) -> None:
    cfg = load_config(
        preset="gaze",
        overrides=[
            "run.num_workers=1",
            "run.use_gpu=true",
            f"engine.precision={precision}",
            f"engine.channels_last={str(channels_last).lower()}",
            "schedule.batch_size=64",
        ],
    )
    torch.manual_seed(0)
    device = torch.device("cuda", 0)
    r_net, d_net = build_refiner(cfg.model).to(device), build_discriminator(cfg.model).to(device)
    refiner = DeepSpeedUpdater(
        r_net, make_optimizer(r_net.parameters(), cfg.optim, 1e-3), 64, cfg.engine
    )
    disc = DeepSpeedUpdater(
        d_net, make_optimizer(d_net.parameters(), cfg.optim, 1e-3), 128, cfg.engine
    )
    synthetic = torch.rand(64, 1, 35, 55, device=device) * 2 - 1
    real = torch.rand(64, 1, 35, 55, device=device) * 2 - 1
    before = [p.detach().float().clone() for p in disc.module.parameters()]
    metrics = refiner_step(refiner, disc, synthetic, cfg, adversarial=True)
    assert all(
        torch.equal(a, p.detach().float())
        for a, p in zip(before, disc.module.parameters(), strict=True)
    )
    buffer = GlobalHistoryBuffer(
        256, (1, 35, 55), seed=0, rank=0, world_size=1, all_gather=dist.all_gather_tensor
    )
    metrics.update(disc_step(refiner, disc, synthetic, real, buffer, 0.5))
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values()), metrics
    assert buffer.num_filled == 32
    assert os.environ["LOCAL_RANK"] == "0"
