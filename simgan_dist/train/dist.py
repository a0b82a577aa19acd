"""The one place that talks to torch.distributed: rank, world size, barriers and metric averaging."""

from __future__ import annotations

from typing import TypeVar

import torch
import torch.distributed as torch_dist

T = TypeVar("T")


def is_distributed() -> bool:
    return torch_dist.is_available() and torch_dist.is_initialized()


def rank() -> int:
    return torch_dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return torch_dist.get_world_size() if is_distributed() else 1


def barrier() -> None:
    if is_distributed():
        torch_dist.barrier()


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Average scalar metrics over ranks with one all-reduce of a small vector (cost: ~8 bytes/key)."""
    if not is_distributed() or not values:
        return dict(values)
    keys = sorted(values)
    vec = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    torch_dist.all_reduce(vec)
    vec /= world_size()
    return {k: float(v) for k, v in zip(keys, vec.tolist(), strict=True)}


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank src's Python object on every rank (pickled; use for small control values only)."""
    if not is_distributed():
        return obj
    holder = [obj]
    torch_dist.broadcast_object_list(holder, src=src)
    return holder[0]


def all_gather_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """(W, *tensor.shape): every rank's tensor, in rank order. NCCL only moves GPU tensors, so the
    tensor travels through the current GPU there and comes back on its own device."""
    if not is_distributed():
        return tensor.unsqueeze(0)
    home = tensor.device
    if torch_dist.get_backend() == "nccl":
        tensor = tensor.to(torch.device("cuda", torch.cuda.current_device()))
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    torch_dist.all_gather(parts, tensor.contiguous())
    return torch.stack(parts).to(home)
