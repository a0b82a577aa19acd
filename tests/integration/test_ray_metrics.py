"""Training figures in Ray's metrics (issue 29 item 4): what RayMetrics sets on a worker is served
by the node's Prometheus endpoint (the one Ray's dashboard and a Prometheus scrape read)."""

from __future__ import annotations

import time
import urllib.request

import pytest

pytestmark = pytest.mark.ray


def test_rank0_figures_are_served_by_the_nodes_metrics_endpoint(ray_local) -> None:
    ray = ray_local

    @ray.remote(num_cpus=0)
    class Rank0:
        def report(self) -> None:
            from simgan_dist.train.ray_metrics import RayMetrics

            RayMetrics("metrics-test")(960, {"loss_r": 0.25, "d_acc_real": 0.75})

    worker = Rank0.remote()
    ray.get(worker.report.remote())
    port = ray.nodes()[0]["MetricsExportPort"]
    text, deadline = "", time.monotonic() + 90  # the agent exports every ~10 s
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
        if "simgan_d_acc_real" in text and "simgan_cur_nimg" in text:
            break
        time.sleep(2)
    lines = [line for line in text.splitlines() if "simgan_" in line and not line.startswith("#")]
    assert any("simgan_loss_r" in line and 'run="metrics-test"' in line and line.endswith(" 0.25")
               for line in lines), lines  # fmt: skip
    assert any("simgan_cur_nimg" in line and line.endswith(" 960.0") for line in lines), lines
    ray.kill(worker)
