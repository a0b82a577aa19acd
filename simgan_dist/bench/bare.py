"""The bench's baselines: Algorithm 1's adversarial phase as a bare PyTorch loop, alone or as two
processes at once (the ceiling for 2 workers on one machine)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

from simgan_dist.bench.processes import run_two_processes
from simgan_dist.config import Config, from_dict
from simgan_dist.model.losses import discriminator_loss, refiner_loss
from simgan_dist.train.engine import TorchUpdater
from simgan_dist.train.malloc_tuning import tune_malloc
from simgan_dist.train.session import build_updaters


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(
    cfg: Config,
    device: torch.device,
    warmup_iters: int,
    measured_iters: int,
    before_timing: Callable[[], object] | None = None,
) -> dict:
    """Algorithm 1's adversarial phase as a plain loop: K_g R steps then K_d D steps per
    iteration, one global batch per step, D's fake half from a history buffer (the paper's).
    Returns images/s over the measured iterations (after warm-up_iters untimed ones);
    before_timing runs between the two (bare_pair lines its processes up there)."""
    s, loss_cfg = cfg.schedule, cfg.loss
    b = s.batch_size
    shape = (cfg.model.image_channels, cfg.model.image_height, cfg.model.image_width)
    # The run's networks and optimizers (session.build_updaters), driven by hand below.
    r_updater, d_updater = build_updaters(cfg, device)
    assert isinstance(r_updater, TorchUpdater) and isinstance(d_updater, TorchUpdater)
    refiner, disc = r_updater.module, d_updater.module
    opt_r, opt_d = r_updater.optimizer, d_updater.optimizer
    if cfg.engine.compile:  # compiled in place (state_dict keys unchanged), in the warm-up
        refiner.compile()
        disc.compile()

    # Images already in memory: a few fixed batches in [-1, 1], cycled.
    pool = 4
    synthetic = [torch.rand(b, *shape, device=device) * 2 - 1 for _ in range(pool)]
    real = [torch.rand(b, *shape, device=device) * 2 - 1 for _ in range(pool)]
    use_buffer = s.history_fraction > 0 and s.buffer_size > 0
    capacity = max(1, s.buffer_size)
    n_hist = min(b, math.floor(s.history_fraction * b + 0.5)) if use_buffer else 0
    buffer = torch.empty((capacity, *shape), device=device) if use_buffer else None
    filled = 0
    draw = 0

    def next_pair() -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal draw
        draw += 1
        return synthetic[draw % pool], real[draw % pool]

    def iteration() -> None:
        nonlocal filled
        for _ in range(s.k_g):
            x, _ = next_pair()
            for p in disc.parameters():
                p.requires_grad_(False)
            pre_tanh = refiner(x, pre_tanh=True)
            refined = torch.tanh(pre_tanh)
            loss, _ = refiner_loss(
                disc(refined), refined, x, loss_cfg.reg_lambda, loss_cfg.psi,
                pre_tanh=pre_tanh, saturation_margin=loss_cfg.saturation_margin,
            )  # fmt: skip
            opt_r.zero_grad(set_to_none=True)
            loss.backward()
            opt_r.step()
            for p in disc.parameters():
                p.requires_grad_(True)
        for _ in range(s.k_d):
            x, y = next_pair()
            with torch.no_grad():
                refined = refiner(x)
            fake = refined
            k = min(n_hist, filled)
            if k:
                idx = torch.randint(0, filled, (k,), device=device)
                assert buffer is not None  # k > 0 needs a buffer
                fake = torch.cat([refined[: b - k], buffer[idx]])
            logits = disc(torch.cat([y, fake]))
            loss, _ = discriminator_loss(logits[:b], logits[b:])
            opt_d.zero_grad(set_to_none=True)
            loss.backward()
            opt_d.step()
            if n_hist:
                assert buffer is not None  # n_hist > 0 needs a buffer
                new = refined[:n_hist]
                free = min(capacity - filled, n_hist)
                buffer[filled : filled + free] = new[:free]
                filled += free
                if free < n_hist:
                    slots = torch.randperm(capacity, device=device)[: n_hist - free]
                    buffer[slots] = new[free:]

    for _ in range(warmup_iters):
        iteration()
    _sync(device)
    if before_timing is not None:
        before_timing()
    start = time.perf_counter()
    for _ in range(measured_iters):
        iteration()
    _sync(device)
    seconds = time.perf_counter() - start
    nimg = measured_iters * (s.k_g + s.k_d) * b
    return {"images_per_s": nimg / seconds, "measured_nimg": nimg, "measured_s": seconds}


def bare_loop_one_thread(
    cfg: Config, device: torch.device, warmup_iters: int, measured_iters: int
) -> dict:
    """bare_loop with 1 torch thread, restoring the caller's thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return bare_loop(cfg, device, warmup_iters, measured_iters)
    finally:
        torch.set_num_threads(threads)


def _bare_pair_process(config: dict, warmup_iters: int, measured_iters: int, sync, results) -> None:
    tune_malloc()
    torch.set_num_threads(1)
    cfg = from_dict(config, source="<bench>")
    figures = bare_loop(cfg, torch.device("cpu"), warmup_iters, measured_iters, sync.wait)
    results.put(figures)


def bare_pair(cfg: Config, warmup_iters: int, measured_iters: int) -> dict:
    """Two bare loops at once in two processes (1 thread each, CPU), each on half the global
    batch, timed together: what 2 workers could reach on this machine with no communication,
    no data loading and no Ray. Images/s is the sum of the two."""
    half = cfg.replace(schedule={"batch_size": cfg.schedule.batch_size // 2}).to_dict()
    return run_two_processes(_bare_pair_process, (half, warmup_iters, measured_iters))
