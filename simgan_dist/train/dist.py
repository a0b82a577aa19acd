"""The one place that talks to torch.distributed: rank, world size, barriers, metric averaging,
and loopback groups (with the free ports they start on)."""

from __future__ import annotations

import os
import socket
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
        # Under NCCL a barrier is an all-reduce on a device; name it, so torch need not guess.
        device = collective_device()
        torch_dist.barrier(device_ids=[device.index] if device.type == "cuda" else None)


def collective_device() -> torch.device:
    """Where a collective's tensors must live. NCCL moves only CUDA tensors (torch 2.13's NCCL
    backend has no CPU path: "No backend type associated with device type cpu"), and Ray Train
    creates an NCCL-only group under run.use_gpu; gloo moves CPU tensors. Every collective here
    places its tensors on this device explicitly, never on torch's default device."""
    if is_distributed() and torch_dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Average scalar metrics over ranks with one all-reduce of a small vector (cost: ~8 bytes/key).
    Every rank must pass the same names (the vector is matched by position)."""
    if not is_distributed() or not values:
        return dict(values)
    keys = sorted(values)
    vec = torch.tensor(
        [float(values[k]) for k in keys], dtype=torch.float64, device=collective_device()
    )
    torch_dist.all_reduce(vec)
    vec /= world_size()
    return {k: float(v) for k, v in zip(keys, vec.tolist(), strict=True)}


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank src's Python object on every rank (pickled; use for small control values only)."""
    if not is_distributed():
        return obj
    holder = [obj]
    torch_dist.broadcast_object_list(holder, src=src, device=collective_device())
    return holder[0]


def all_gather_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """(W, *tensor.shape): every rank's tensor, in rank order. NCCL only moves GPU tensors, so the
    tensor travels through the current GPU there and comes back on its own device."""
    if not is_distributed():
        return tensor.unsqueeze(0)
    home = tensor.device
    tensor = tensor.to(collective_device())
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    torch_dist.all_gather(parts, tensor.contiguous())
    return torch.stack(parts).to(home)


def free_ports(count: int) -> list[int]:
    """count distinct TCP ports on 127.0.0.1 that were free a moment ago.

    The sockets are held until all are bound, so the ports differ. Nothing listens on them once
    this returns: a caller that wants a refused connection uses one as it is.
    """
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    """One TCP port on 127.0.0.1 that was free a moment ago (see free_ports)."""
    return free_ports(1)[0]


def start_loopback_group(rank: int, world_size: int, port: int) -> None:
    """A gloo group over 127.0.0.1 for processes started without Ray (the bench's loop_2p).
    DeepSpeed asserts LOCAL_RANK, which launchers such as Ray Train set."""
    os.environ.setdefault("LOCAL_RANK", str(rank))
    torch_dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )


def end_group() -> None:
    if is_distributed():
        torch_dist.destroy_process_group()
