"""`simgan bench control`: a small run through the CLI, its output fields checked (not its speed)."""

from __future__ import annotations

import json

import pytest

from simgan_dist.cli import main


def test_bench_control_command_prints_every_figure(
    ray_local, s3_server, s3_bucket, tmp_path, capsys
) -> None:
    out = tmp_path / "control.json"
    main(["bench", "control", "--num-shards", "40,120", "--num-workers", "16",
          "--samples-per-shard", "100", "--preset", "debug", "--s3-endpoint", s3_server,
          "--no-index-max", "40", "--actor-calls", "20", "--out", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["s3_endpoint"] == s3_server
    work = result["work"]
    assert work["train_shard_s"] == 100 / work["train_images_per_s"]
    assert work["refine_shard_s"] == 100 / work["refine_images_per_s"]
    assert [c["num_shards"] for c in result["catalog"]] == [40, 120]
    for c in result["catalog"]:
        # 16 workers each finish the first half of their share; the rest is re-dealt over 15.
        assert c["num_recorded"] == c["progress_finished"] > 0
        assert c["num_recorded"] + c["num_redealt"] == c["num_shards"]
        assert c["bytes_per_shard"] > 0 and c["checkpoint_bytes"] > 0
        assert c["overhead_pct"] == 100 * c["per_shard_s"] / work["train_shard_s"]
        # The record call is counted as the measured actor hop, not the in-process call.
        deal = (c["for_rank_s"] + c["checkpoint_s"]) / c["shards_per_worker"]
        assert c["per_shard_s"] == pytest.approx(deal + result["actor_call_s"])
    assert set(result["ledger"]) == {"local", "s3"}
    for store, rows in result["ledger"].items():
        assert [g["num_shards"] for g in rows] == [40, 120]
        for g in rows:
            assert (g["num_done"], g["num_todo"]) == (g["num_shards"] // 2, g["num_shards"] // 2)
            assert g["replan_s"] >= g["lease_s"] + g["inputs_s"] + g["ledger_s"] - 1e-6
            assert g["done_record_s"] > 0 and g["index_share_s"] > 0 and g["small_list_s"] > 0
            assert g["num_list_pages"] == 2 * -(-g["num_done"] // 1000) + 1
            assert g["overhead_pct"] == 100 * g["per_shard_s"] / work["refine_shard_s"]
            assert ("replan_no_index_s" in g) == (g["num_shards"] <= 40)
            assert ("bytes_per_shard" in g) == (store == "local")
    for heading in ("shard catalog", "refine ledger", "% of training", "% of refining"):
        assert heading in printed
    assert printed.count("| s3 |") == 2 and printed.count("| local |") == 2
    # The bench's bucket is removed afterwards.
    buckets = {b["Name"] for b in s3_bucket.list_buckets()["Buckets"]}
    assert buckets == {"simgan-test"}
