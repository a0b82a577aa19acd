"""GPU input path (marked gpu, skipped without CUDA): batches arrive in pinned host memory and
their copy to the device overlaps kernels already queued on the compute stream."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from simgan_dist.data.reader import batch_stream
from simgan_dist.data.streams import HostToDevice
from simgan_dist.io.shardio import resolve_shard_urls

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("num_loader_workers", [0, 1])
def test_batches_come_pinned(digit_shards: dict[str, Path], num_loader_workers: int) -> None:
    urls = resolve_shard_urls(str(digit_shards["synthetic"]))
    stream = batch_stream(urls, 8, (1, 28, 28), seed=0, num_loader_workers=num_loader_workers,
                          with_meta=False, pin_memory=True)  # fmt: skip
    images, _ = next(stream)
    assert images.is_pinned()
    unpinned, _ = next(batch_stream(urls, 8, (1, 28, 28), seed=0, with_meta=False))
    assert not unpinned.is_pinned()


def test_copy_overlaps_queued_compute() -> None:
    device = torch.device("cuda", 0)
    to_device = HostToDevice(device)
    host = torch.rand(16, 1024, 1024)  # 64 MiB, pageable: HostToDevice pins it
    compute = torch.cuda.current_stream(device)
    torch.cuda.synchronize(device)
    torch.cuda._sleep(2_000_000_000)  # ~1 s of GPU time queued on the compute stream
    moved = to_device(host)
    copied = torch.cuda.Event()
    copied.record(to_device.stream)
    deadline = time.monotonic() + 0.5
    while not copied.query() and time.monotonic() < deadline:
        time.sleep(0.001)
    # The copy finished while the compute stream was still busy with the queued kernel.
    assert copied.query() and not compute.query()
    torch.cuda.synchronize(device)
    assert moved.device == device and torch.equal(moved.cpu(), host)
