"""Every collective's tensor lives on the process group's device (issue 29 item 1), checked on CPU.

NCCL moves only CUDA tensors: a collective handed a tensor on torch's default device (the CPU)
fails at the first metrics row of every `run.use_gpu` run. Without a GPU the rule is enforced by
two 2-rank gloo groups: torch.distributed's collectives are wrapped to refuse a tensor that is not
on dist.collective_device(), and torch's default device is set to "meta" around the metrics,
score and checkpoint collectives, so a tensor created without an explicit device (what broke
under NCCL) reaches the wrapper on "meta" and is refused. The buffer's collectives run under the
wrapper with its CPU storage as it is.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp

from simgan_dist.config import load_config
from simgan_dist.data.catalog import local_catalogs
from simgan_dist.train import dist
from simgan_dist.train.checkpoint import CatalogRecord
from simgan_dist.train.dist import free_port
from simgan_dist.train.global_history import GlobalHistoryBuffer

WRAPPED = ("all_reduce", "all_gather", "broadcast", "all_gather_into_tensor", "reduce_scatter")


def _wrap_collectives(seen: list[str]) -> None:
    """Make every tensor collective refuse a tensor off the group's device, and log the call."""
    for name in WRAPPED:
        original = getattr(torch_dist, name)

        def checked(*args, _name=name, _original=original, **kwargs):
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            tensors += [t for a in args if isinstance(a, list) for t in a]
            for tensor in tensors:
                if tensor.device != dist.collective_device():
                    raise AssertionError(
                        f"{_name} got a tensor on {tensor.device}, the group moves "
                        f"{dist.collective_device()} tensors"
                    )
            seen.append(_name)
            return _original(*args, **kwargs)

        setattr(torch_dist, name, checked)


def _worker(rank: int, port: int, corpus: str, out: dict) -> None:
    torch_dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2
    )
    seen: list[str] = []
    _wrap_collectives(seen)
    cfg = load_config(preset="debug", overrides=[f"data.synthetic={corpus}", f"data.real={corpus}"])
    catalogs = local_catalogs(cfg, 2)
    buffer = GlobalHistoryBuffer(8, (1, 28, 28), 0, rank, 2, dist.all_gather_tensor)
    images = torch.rand(4, 1, 28, 28)
    with tempfile.TemporaryDirectory() as tmp:
        torch.set_default_device("meta")  # an unplaced tensor would land here
        try:
            means = dist.mean_over_ranks({"loss_r": float(rank), "loss_d": 1.0})
            scores = dist.broadcast_object({"realism": 0.5} if rank == 0 else None)
            record = CatalogRecord(catalogs, cfg, rank, 2)
            record.save_to(Path(tmp))  # the checkpoint's barrier
            record.load_from(Path(tmp))
        finally:
            torch.set_default_device("cpu")
    buffer.push(images)
    sampled = buffer.sample(2)
    if rank == 0:
        out["means"], out["scores"] = means, scores
        out["sampled"] = tuple(sampled.shape)
        out["seen"] = sorted(set(seen))
    torch_dist.destroy_process_group()


@pytest.mark.slow  # out of the quick tier
def test_metrics_scores_checkpoint_and_buffer_collectives_use_the_groups_device(
    digit_shards,
) -> None:
    port = free_port()
    # A spawned (not forked) manager: a fork would copy a live Ray driver of the session.
    manager = mp.get_context("spawn").Manager()
    out = manager.dict()
    mp.spawn(_worker, args=(port, str(digit_shards["synthetic"]), out), nprocs=2, join=True)
    assert out["means"] == {"loss_d": 1.0, "loss_r": 0.5}
    assert out["scores"] == {"realism": 0.5}
    assert out["sampled"] == (2, 1, 28, 28)
    assert {"all_reduce", "all_gather"} <= set(out["seen"])


def test_a_cpu_group_collects_on_the_cpu() -> None:
    assert dist.collective_device() == torch.device("cpu")  # no group: nothing moves


@pytest.fixture(autouse=True)
def _default_device_back():
    yield
    torch.set_default_device("cpu")
