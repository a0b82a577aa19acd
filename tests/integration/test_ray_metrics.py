"""Training figures in Ray's metrics (issue 29 item 4): what RayMetrics sets on a worker is served
by the node's Prometheus endpoint (the one Ray's dashboard and a Prometheus scrape read)."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable

import pytest

pytestmark = pytest.mark.ray


def _scrape(ray, found: Callable[[list[str]], bool]) -> list[str]:
    """The simgan_ sample lines of the node's metrics endpoint, once found(lines) holds (the
    agent exports every ~10 s; earlier tests' runs have gauges there too) or after 90 s."""
    port = ray.nodes()[0]["MetricsExportPort"]
    lines: list[str] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
        lines = [x for x in text.splitlines() if "simgan_" in x and not x.startswith("#")]
        if found(lines):
            break
        time.sleep(2)
    return lines


def _has(lines: list[str], name: str, run: str, value: float) -> bool:
    return any(
        f"{name}{{" in line and f'run="{run}"' in line and line.endswith(f" {value}")
        for line in lines
    )


def test_rank0_figures_are_served_by_the_nodes_metrics_endpoint(ray_local) -> None:
    ray = ray_local

    @ray.remote(num_cpus=0)
    class Rank0:
        def report(self) -> None:
            from simgan_dist.train.ray_metrics import RayMetrics

            RayMetrics("metrics-test")(960, {"loss_r": 0.25, "d_acc_real": 0.75})

    worker = Rank0.remote()
    ray.get(worker.report.remote())

    def reported(lines: list[str]) -> bool:
        return _has(lines, "ray_simgan_loss_r", "metrics-test", 0.25) and _has(
            lines, "ray_simgan_cur_nimg", "metrics-test", 960.0
        )

    assert reported(_scrape(ray, reported))
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
    done, images = float(summary["num_shards_refined"]), float(summary["num_images_refined"])

    def reported(lines: list[str]) -> bool:
        return (
            _has(lines, "ray_simgan_refine_shards_done", output, done)
            and _has(lines, "ray_simgan_refine_cur_nimg", output, images)
            and _has(lines, "ray_simgan_refine_shards_failed", output, 0.0)
        )

    assert reported(_scrape(ray_local, reported))
