"""Updaters: one network plus its optimizer, as plain PyTorch or as a DeepSpeed engine (the only deepspeed glue)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Protocol

import torch
from torch import nn

from simgan_dist.config import EngineConfig, OptimConfig
from simgan_dist.config.deepspeed_passthrough import merge_deepspeed_config
from simgan_dist.errors import InputError
from simgan_dist.train import versions


class Updater(Protocol):
    """What the training loop needs from R or D: a forward pass and a step on a loss."""

    module: nn.Module

    def forward(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """The module's forward through the engine; kwargs go to the module."""
        ...

    def frozen_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The module alone, outside the engine (no engine bookkeeping), in its precision: for
        the other network's step, where this one must not be updated."""
        ...

    def step(self, loss: torch.Tensor) -> None: ...

    def optimizer_state_dict(self) -> dict[str, Any]: ...

    def load_optimizer_state_dict(self, state: dict[str, Any]) -> None: ...


def make_optimizer(
    params: Iterable[nn.Parameter], cfg: OptimConfig, lr: float
) -> torch.optim.Optimizer:
    """The paper's SGD, or Adam (cfg.optimizer). A torch optimizer (not DeepSpeed's "Adam" type,
    which becomes AdamW with a slow CPU JIT build) so both updaters share it."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum)
    return torch.optim.Adam(params, lr=lr, betas=cfg.adam_betas)


def make_lr_schedule(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, default_total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR | None:
    """Linear warmup over warmup_steps, then constant or a cosine decay to 0 at total_steps.
    Steps are this engine's optimizer steps (R and D step at different rates)."""
    if cfg.lr_schedule == "constant" and cfg.warmup_steps == 0:
        return None
    total = max(cfg.total_steps or default_total_steps, cfg.warmup_steps + 1)

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.lr_schedule == "constant":
            return 1.0
        progress = min(1.0, (step - cfg.warmup_steps) / (total - cfg.warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class TorchUpdater:
    """Plain single-process PyTorch: the bare baseline and the unit-test path."""

    def __init__(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        lr_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        name: str = "refiner",
    ) -> None:
        self.module = module
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler

    def forward(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.module(x, **kwargs)

    def frozen_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    def step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.lr_scheduler is not None:
            self.lr_scheduler.step()

    def optimizer_state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "zero_stage": 0}

    def load_optimizer_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


def _import_deepspeed_quietly() -> Any:
    """Import DeepSpeed with its logger at ERROR unless `simgan --verbose`: its import warns
    "Setting accelerator to CPU" in every CPU worker, and its INFO lines repeat per engine.
    Its logger is created, with its own level and handler, during the import, so it is
    disabled across the import and then set."""
    import logging

    from simgan_dist.config.verbosity import third_party_verbose

    level = logging.INFO if third_party_verbose() else logging.ERROR
    ds_logger = logging.getLogger("DeepSpeed")
    ds_logger.disabled = level > logging.INFO
    try:
        import deepspeed
    finally:
        ds_logger.disabled = False
    ds_logger.setLevel(level)
    for handler in ds_logger.handlers:
        handler.setLevel(level)
    return deepspeed


def _skip_shm_comm_build() -> None:
    """DeepSpeed JIT-builds a shared-memory all-reduce op on CPU at first init (30-60 s cold, and a
    compile killed midway leaves a lock that hangs the next one). It only serves inference
    all-reduce, which training never calls, so mark it unavailable."""
    versions.require(versions.DEEPSPEED_COMPATIBLE_OPS)
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False  # ShareMemCommBuilder.NAME


def deepspeed_config(
    micro_batch_size: int, cfg: EngineConfig, engine_name: str = "refiner"
) -> dict[str, Any]:
    """DeepSpeed's JSON config from ours, with engine.deepspeed merged over it. ZeRO 0 (plain
    data parallel) is the default: R and D are a few MB, so sharding their optimizer state buys
    little."""
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": cfg.grad_accum_steps,
        "zero_optimization": {"stage": cfg.zero_stage},
        "gradient_clipping": cfg.grad_clip,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }
    if cfg.zero_stage > 0:
        # DeepSpeed lists Adam-family optimizers as tested with ZeRO; SGD is element-wise too,
        # so sharding its state is just as valid.
        config["zero_allow_untested_optimizer"] = True
    if cfg.precision == "bf16":
        # Autocast keeps fp32 master weights and casts per op; it runs on CPU and GPU alike.
        config["torch_autocast"] = {"enabled": True, "dtype": "bfloat16"}
    elif cfg.precision == "fp16":
        config["fp16"] = {"enabled": True, "auto_cast": True, "initial_scale_power": 12}
    return merge_deepspeed_config(config, cfg.deepspeed, engine_name)


class DeepSpeedUpdater:
    """A DeepSpeed engine around one network; gradients are averaged over all ranks in step()."""

    def __init__(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        micro_batch_size: int,
        cfg: EngineConfig | None = None,
        lr_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        name: str = "refiner",
    ) -> None:
        deepspeed = _import_deepspeed_quietly()  # here, so the rest of the package never needs it

        _skip_shm_comm_build()
        cfg = cfg or EngineConfig()
        self.zero_stage = cfg.zero_stage
        if cfg.channels_last:
            module = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.channels_last = cfg.channels_last
        self.precision = cfg.precision
        # The process group already exists (Ray Train or the test harness set it up).
        self.engine, self.optimizer, _, self.lr_scheduler = deepspeed.initialize(
            model=module,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            config=deepspeed_config(micro_batch_size, cfg, name),
            dist_init_required=False,
        )
        if cfg.compile:
            # In place (nn.Module.compile): engine.module, frozen_forward and the checkpoint's
            # state_dict keys stay what they were; backward and the optimizer step stay eager.
            self.engine.compile()
        self.module = self.engine.module

    def forward(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.engine(x, **kwargs)

    def frozen_forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.precision == "fp16":  # the engine holds fp16 weights
            return self.module(x.half())
        if self.precision == "bf16":  # as the engine's torch_autocast does in forward()
            with torch.autocast(x.device.type, dtype=torch.bfloat16):
                return self.module(x)
        return self.module(x)

    def step(self, loss: torch.Tensor) -> None:
        # With accumulation, DeepSpeed scales the loss and only steps at the boundary.
        self.engine.backward(loss)
        self.engine.step()  # optimizer (and lr schedule) step, then DeepSpeed zeroes the grads

    def optimizer_state_dict(self) -> dict[str, Any]:
        """This rank's optimizer state as tensors and plain values (weights_only-loadable).

        Under ZeRO 1/2 the state is this rank's partition; DeepSpeed's own state_dict holds
        objects (loss scaler, enums) that weights_only refuses, so only the wrapped torch
        optimizer's state is kept and the fp32 master partition is rebuilt from the weights.
        """
        inner = self.optimizer.optimizer if self.zero_stage > 0 else self.optimizer
        state: dict[str, Any] = {"optimizer": inner.state_dict(), "zero_stage": self.zero_stage}
        if self.lr_scheduler is not None:
            state["lr_scheduler"] = self.lr_scheduler.state_dict()
        return state

    def load_optimizer_state_dict(self, state: dict[str, Any]) -> None:
        """Call after loading the module's weights (ZeRO copies them into its fp32 partition)."""
        if state["zero_stage"] != self.zero_stage:
            raise InputError(
                f"optimizer state saved with ZeRO stage {state['zero_stage']}, "
                f"this engine runs stage {self.zero_stage}"
            )
        if self.zero_stage > 0:
            self.optimizer.optimizer.load_state_dict(state["optimizer"])
            versions.require(versions.DEEPSPEED_RESTORE_BIT16)
            self.optimizer._restore_from_bit16_weights()
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        if self.lr_scheduler is not None:
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
