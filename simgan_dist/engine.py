"""Updaters: one network plus its optimizer, as plain PyTorch or as a DeepSpeed engine (the only deepspeed glue)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import torch
from torch import nn

from simgan_dist.config import OptimConfig


class Updater(Protocol):
    """What the training loop needs from R or D: a forward pass and a step on a loss."""

    module: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor: ...

    def step(self, loss: torch.Tensor) -> None: ...

    def optimizer_state_dict(self) -> dict[str, Any]: ...

    def load_optimizer_state_dict(self, state: dict[str, Any]) -> None: ...


def make_optimizer(
    params: Iterable[nn.Parameter], cfg: OptimConfig, lr: float
) -> torch.optim.Optimizer:
    """The paper's SGD, or Adam. A torch optimizer (not DeepSpeed's "Adam" type, which becomes
    AdamW with a slow CPU JIT build) so both updaters share it."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum)
    return torch.optim.Adam(params, lr=lr, betas=cfg.adam_betas)


class TorchUpdater:
    """Plain single-process PyTorch: the bare baseline and the unit-test path."""

    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.module = module
        self.optimizer = optimizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    def step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def optimizer_state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_optimizer_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)


def _skip_shm_comm_build() -> None:
    """DeepSpeed JIT-builds a shared-memory all-reduce op on CPU at first init (30-60 s cold, and a
    compile killed midway leaves a lock that hangs the next one). It only serves inference
    all-reduce, which training never calls, so mark it unavailable."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False  # ShareMemCommBuilder.NAME


def deepspeed_config(micro_batch_size: int) -> dict[str, Any]:
    """ZeRO stage 0 (plain data parallel): R and D are a few MB, so sharding buys nothing."""
    return {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": 0},
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }


class DeepSpeedUpdater:
    """A DeepSpeed engine around one network; gradients are averaged over all ranks in step()."""

    def __init__(
        self, module: nn.Module, optimizer: torch.optim.Optimizer, micro_batch_size: int
    ) -> None:
        import deepspeed  # imported here so the rest of the package never needs it

        _skip_shm_comm_build()
        # The process group already exists (Ray Train or the test harness set it up).
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=module,
            optimizer=optimizer,
            config=deepspeed_config(micro_batch_size),
            dist_init_required=False,
        )
        self.module = self.engine.module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.engine(x)

    def step(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)
        self.engine.step()  # optimizer step, then DeepSpeed zeroes the grads

    def optimizer_state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_optimizer_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)
