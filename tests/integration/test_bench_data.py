"""`simgan bench data`: three rates from one run and ratios computed from them (speed not asserted)."""

from __future__ import annotations

import json

import pytest

from simgan_dist.bench.data import bench_data, format_table
from simgan_dist.cli import main


def test_bench_data_reports_rates_and_ratios(s3_server, s3_bucket) -> None:
    # Against the tests' S3 server; without --endpoint-url the bench starts its own.
    result = bench_data(num_samples=200, samples_per_shard=50, num_batches=3,
                        num_loader_workers=0, preset="debug", endpoint_url=s3_server)  # fmt: skip
    loader = result["loader"]
    assert set(loader) == {"local_1", "s3_1", "local_2", "s3_2"}
    assert all(r["images_per_s"] > 0 and r["nimg"] == 3 * 8 for r in loader.values())
    local = max(loader["local_1"]["images_per_s"], loader["local_2"]["images_per_s"])
    s3 = max(loader["s3_1"]["images_per_s"], loader["s3_2"]["images_per_s"])
    assert result["ratios"]["s3/local"] == pytest.approx(s3 / local)
    slowest = min(local, s3)
    assert result["ratios"]["loader/train"] == pytest.approx(slowest / result["train_images_per_s"])
    assert "s3/local" in format_table(result)
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
