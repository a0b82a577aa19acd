"""bench refine's per-image parts and node projection (issue 29 item 2): a node refines as fast
as its slower side, GPU forwards or CPU decode and encode; a CPU node adds the parts' times."""

from __future__ import annotations

import numpy as np
import pytest

from simgan_dist.bench.refine_parts import codec_rates, format_parts, node_projection
from simgan_dist.io.shardio import write_shards


def test_a_gpu_node_is_bound_by_its_slower_side() -> None:
    # 1,000 images/s of codec per core, 8,000 forwards/s per GPU: 8 cores keep one GPU busy.
    fed = node_projection(1000.0, 8000.0, threads_per_worker=1, num_cpus=32, num_gpus=2)
    assert fed["node_images_per_s"] == 16000.0 and fed["bound_by"] == "GPU forward"
    assert fed["cores_to_keep_one_gpu_busy"] == 8 and fed["codec_to_forward"] == 8.0
    starved = node_projection(1000.0, 8000.0, threads_per_worker=1, num_cpus=8, num_gpus=4)
    assert starved["node_images_per_s"] == 8000.0 and starved["bound_by"] == "CPU decode/encode"


def test_a_cpu_node_spends_each_parts_time_on_the_same_cores() -> None:
    # Per image: 1 ms of codec and 2 threads x 1/500 s = 4 ms of forward: 5 ms of core time.
    cpu = node_projection(1000.0, 500.0, threads_per_worker=2, num_cpus=10, num_gpus=0)
    assert cpu["node_images_per_s"] == pytest.approx(2000.0)
    assert cpu["codec_to_forward"] == pytest.approx(0.25) and cpu["bound_by"] == "CPU"


def test_codec_rates_time_the_shards_own_samples(tmp_path) -> None:
    rng = np.random.default_rng(0)
    samples = [(f"k{i}", rng.integers(0, 256, (28, 28), dtype=np.uint8), {"label": 1})
               for i in range(8)]  # fmt: skip
    write_shards(samples, tmp_path, "part", 8)
    rates = codec_rates(str(next(tmp_path.glob("part-*.tar"))), seconds=0.05)
    assert rates["codec_images_per_s"] == pytest.approx(
        1 / (1 / rates["decode_images_per_s"] + 1 / rates["encode_images_per_s"])
    )
    parts = {**rates, "node_cpus": 4, "node_gpus": 0,
             "projection": node_projection(rates["codec_images_per_s"], 100.0, 1, 4, 0)}  # fmt: skip
    assert "projected for a node of 4 CPUs and 0 GPUs" in format_parts(parts)[1]
