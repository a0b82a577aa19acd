"""Training figures in Ray's metrics (issue 29 item 4): what RayMetrics sets on a worker is served
by the node's Prometheus endpoint (the one Ray's dashboard and a Prometheus scrape read)."""

from __future__ import annotations

import time
import urllib.request

import pytest

pytestmark = pytest.mark.ray


def _scrape(ray, names: tuple[str, ...]) -> list[str]:
    """The simgan_ sample lines of the node's metrics endpoint, once every name is there (the
    agent exports every ~10 s) or after 90 s."""
    port = ray.nodes()[0]["MetricsExportPort"]
    text, deadline = "", time.monotonic() + 90
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
        if all(name in text for name in names):
            break
        time.sleep(2)
    return [line for line in text.splitlines() if "simgan_" in line and not line.startswith("#")]


def test_rank0_figures_are_served_by_the_nodes_metrics_endpoint(ray_local) -> None:
    ray = ray_local

    @ray.remote(num_cpus=0)
    class Rank0:
        def report(self) -> None:
            from simgan_dist.train.ray_metrics import RayMetrics

            RayMetrics("metrics-test")(960, {"loss_r": 0.25, "d_acc_real": 0.75})

    worker = Rank0.remote()
    ray.get(worker.report.remote())
    lines = _scrape(ray, ("simgan_d_acc_real", "simgan_cur_nimg"))
    assert any("simgan_loss_r" in line and 'run="metrics-test"' in line and line.endswith(" 0.25")
               for line in lines), lines  # fmt: skip
    assert any("simgan_cur_nimg" in line and line.endswith(" 960.0") for line in lines), lines
    ray.kill(worker)


def test_a_refine_jobs_progress_is_served_by_the_metrics_endpoint(
    ray_local, checkpoint, digit_shards, tmp_path
) -> None:
    from simgan_dist.refine.ray_pool import refine_shards
    from simgan_dist.refine.shard import RefineSettings

    output = str(tmp_path / "refined")
    settings = RefineSettings(batch_size=16, num_workers=1, threads_per_worker=1)
    summary = refine_shards(checkpoint, str(digit_shards["synthetic"]), output, settings,
                            progress=False)  # fmt: skip
    lines = _scrape(ray_local, ("simgan_refine_shards_done", "simgan_refine_lease_age_s"))
    mine = [line for line in lines if f'run="{output}"' in line]
    assert any("simgan_refine_shards_done" in line and
               line.endswith(f" {float(summary['num_shards_refined'])}") for line in mine), mine  # fmt: skip
    assert any("simgan_refine_cur_nimg" in line and
               line.endswith(f" {float(summary['num_images_refined'])}") for line in mine), mine  # fmt: skip
    assert any("simgan_refine_shards_failed" in line and line.endswith(" 0.0") for line in mine)
