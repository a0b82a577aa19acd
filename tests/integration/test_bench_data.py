"""`simgan bench data`: three rates from one run and ratios computed from them (speed not asserted)."""

from __future__ import annotations

import json
import math

import pytest

from simgan_dist.bench.data import bench_data, format_table
from simgan_dist.cli import main


def test_bench_data_reports_rates_and_ratios(s3_server, s3_bucket) -> None:
    # Against the tests' S3 server; without --endpoint-url the bench starts its own.
    result = bench_data(num_samples=200, samples_per_shard=50, num_batches=3,
                        num_loader_workers=0, preset="debug", endpoint_url=s3_server,
                        consumption=[1e6], refine_seconds=0.2)  # fmt: skip
    loader = result["loader"]
    assert set(loader) == {"local_1", "s3_1", "local_2", "s3_2"}
    assert all(r["images_per_s"] > 0 and r["nimg"] == 3 * 8 for r in loader.values())
    local = max(loader["local_1"]["images_per_s"], loader["local_2"]["images_per_s"])
    s3 = max(loader["s3_1"]["images_per_s"], loader["s3_2"]["images_per_s"])
    assert result["ratios"]["s3/local"] == pytest.approx(s3 / local)
    slowest = min(local, s3)
    assert result["ratios"]["loader/train"] == pytest.approx(slowest / result["train_images_per_s"])
    # Consumers, the loader processes they need, FLOPs and the trust verdict (issue 17).
    assert result["refine_images_per_s"] > 0
    assert result["ratios"]["loader/refine"] == pytest.approx(
        slowest / result["refine_images_per_s"]
    )
    per_loader = result["decode_images_per_s_per_loader"]
    assert per_loader == pytest.approx(slowest)  # 0 loader workers: decoding in one process
    needed = result["loaders_needed"]
    assert set(needed) == {"train", "refine", "1e+06 img/s"}
    assert needed["1e+06 img/s"] == max(1, math.ceil(1e6 / per_loader))
    assert all(n >= 1 for n in needed.values())
    flops = result["flops"]
    for name in ("train", "refine"):
        assert flops[name]["achieved_flops"] > 0
        # A figure cannot beat the hardware by much; the peak is the better of two kernels.
        assert 0 < flops[name]["share_of_measured_peak"] <= 2.0, name
    assert flops["train"]["achieved_flops"] == pytest.approx(
        flops["per_image"]["train"] * result["train_images_per_s"]
    )
    assert isinstance(result["trust"]["trusted"], bool)
    table = format_table(result)
    assert "s3/local" in table and "loader processes needed" in table and "of peak" in table
    assert table.splitlines()[-1].startswith("trust: ")
    json.dumps(result)
    # The bench's bucket is removed afterwards.
    listed = s3_bucket.list_objects_v2(Bucket="simgan-bench").get("Contents", [])
    assert not listed


def test_bench_data_command_runs_its_own_s3_server(tmp_path, capsys) -> None:
    out = tmp_path / "data.json"
    main(["bench", "data", "--num-samples", "100", "--num-batches", "2",
          "--num-loader-workers", "0", "--preset", "debug", "--out", str(out)])  # fmt: skip
    assert "moto on 127.0.0.1" in capsys.readouterr().out
    assert json.loads(out.read_text())["ratios"]["s3/local"] > 0
