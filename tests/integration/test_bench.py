"""`simgan bench train`: figures are produced and ratios come from them (speed is not asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simgan_dist.bench.cpu import ROLES
from simgan_dist.bench.table import format_table
from simgan_dist.bench.train import bench_train


@pytest.mark.ray
def test_bench_train_debug_reports_every_figure(
    ray_local, digit_shards: dict[str, Path], tmp_path: Path
) -> None:
    result = bench_train(
        preset="debug",
        nimg=48,
        shards=digit_shards["synthetic"].parent,
        work_dir=tmp_path,
        say=lambda _: None,
        compile_bare=True,
    )
    ips = {name: r["images_per_s"] for name, r in result["results"].items()}
    assert set(ips) == {"bare", "bare_compiled", "ours_1w", "ours_2w", "bare_2p", "loop_2p"}
    assert all(v > 0 for v in ips.values())
    ratios = result["ratios"]
    assert ratios["ours_1w/bare"]["value"] == pytest.approx(ips["ours_1w"] / ips["bare"])
    assert ratios["ours_2w/ours_1w"]["value"] == pytest.approx(ips["ours_2w"] / ips["ours_1w"])
    # The ceiling: two bare processes on half batches each, summed; no target.
    pair = result["results"]["bare_2p"]
    assert pair["images_per_s"] == pytest.approx(sum(pair["processes_images_per_s"]))
    assert pair["measured_nimg"] == result["config"]["measured_nimg"]
    assert ratios["bare_2p/ours_1w"]["value"] == pytest.approx(ips["bare_2p"] / ips["ours_1w"])
    assert ratios["ours_2w/bare_2p"]["target"] is None
    # Our loop on 2 plain processes without Ray: its figure splits ours_2w/bare_2p in two.
    loop = result["results"]["loop_2p"]
    assert loop["images_per_s"] == pytest.approx(sum(loop["processes_images_per_s"]))
    assert loop["measured_nimg"] == result["config"]["measured_nimg"]
    assert ratios["loop_2p/bare_2p"]["value"] * ratios["ours_2w/loop_2p"]["value"] == (
        pytest.approx(ratios["ours_2w/bare_2p"]["value"])
    )
    for key, r in ratios.items():
        if r["target"] is not None:
            assert r["met"] == (r["value"] >= r["target"]), key
    # The Ray runs timed the adversarial rows after warm-up: as many images as the bare loop,
    # in two alternating rounds (the default); the bare loop in one more part than rounds.
    cfg = result["config"]
    assert cfg["rounds"] == 2
    assert cfg["measured_nimg"] == 2 * cfg["measured_nimg_per_run"]
    for name in ("bare", "ours_1w", "ours_2w"):
        figure = result["results"][name]
        assert figure["measured_nimg"] == cfg["measured_nimg"], name
        assert figure["images_per_s"] == pytest.approx(
            figure["measured_nimg"] / figure["measured_s"]
        )
    assert len(result["results"]["ours_1w"]["parts_images_per_s"]) == 2
    assert len(result["results"]["ours_2w"]["run_dirs"]) == 2
    assert len(result["results"]["bare"]["parts_images_per_s"]) == min(3, 2 * cfg["measured_iters"])
    # CPU accounting of each Ray configuration's timed intervals: None when they were shorter
    # than two sampler intervals (likely at this tiny size), else the roles fill the machine.
    for name in ("ours_1w", "ours_2w"):
        cores = result["results"][name]["cpu_cores"]
        if cores is not None:
            assert sum(cores[r] for r in ROLES) == pytest.approx(cores["num_cpus"], rel=0.1)
    # torch.compile'd bare loop against eager, in the same rounds (issue 17).
    assert ratios["bare_compiled/bare"]["value"] == pytest.approx(
        ips["bare_compiled"] / ips["bare"]
    )
    assert len(result["results"]["bare_compiled"]["parts_images_per_s"]) == len(
        result["results"]["bare"]["parts_images_per_s"]
    )
    # FLOPs: every figure's achieved FLOP/s and share of the peak measured in this run.
    flops = result["flops"]
    assert flops["peak"]["peak_flops"] > 0 and flops["peak"]["threads"] == 1
    for name, r in result["results"].items():
        row = r["flops"]
        assert row["achieved_flops"] == pytest.approx(flops["per_image"]["train"] * ips[name])
        assert 0 < row["share_of_measured_peak"] <= 2.0, name
    assert set(result["trust"]) == {"trusted", "reasons", "steal_share"}
    assert result["trust"]["trusted"] == (not result["trust"]["reasons"])
    table = format_table(result)
    assert "of peak" in table and "peak measured on cpu" in table
    assert "bare_compiled/bare" in table and "trust: " in table
    assert "CPU in the timed intervals" in table
    assert "ours_2w/ours_1w" in table and "images/s" in table and "bare_2p/ours_1w" in table
    assert "ours_2w/loop_2p" in table and "the loop's collectives" in table
    assert "ours_2w/ours_1w per round: " in table
    json.dumps(result)  # what --out writes
