"""Rank 0's training figures and a refine job's progress as Ray metrics: Ray's metrics agent
exports them to Prometheus and the dashboard's Metrics view, beside Ray's own (Ray Train V2 keeps
reported metrics only with checkpoints, so without these a running job shows nothing between
checkpoints)."""

from __future__ import annotations

import re

from ray.util.metrics import Gauge

PREFIX = "simgan_"  # Ray exports a custom metric under its own name, prefixed by "ray_"
REFINE_PREFIX = "simgan_refine_"


class RayMetrics:
    """A gauge per metric name (losses, D accuracy, images/s, skipped samples, cur_nimg), tagged
    with the run's name, set at every metrics row. Gauges are made on first use, so a name added
    to the loop needs no change here."""

    def __init__(self, run_name: str, prefix: str = PREFIX, job: str = "training") -> None:
        self.tags = {"run": run_name}
        self.prefix, self.job = prefix, job
        self.gauges: dict[str, Gauge] = {}

    def __call__(self, cur_nimg: int, metrics: dict[str, float]) -> None:
        for name, value in {"cur_nimg": float(cur_nimg), **metrics}.items():
            gauge = self.gauges.get(name)
            if gauge is None:
                gauge = Gauge(
                    self.prefix + re.sub(r"[^a-zA-Z0-9_]", "_", name),
                    description=f"simgan-dist {self.job}: {name} (last value)",
                    tag_keys=("run",),
                )
                self.gauges[name] = gauge
            gauge.set(float(value), tags=self.tags)


class RefineMetrics:
    """A refine job's progress, set by its driver at every poll: shards done and failed, images
    and images/s, and the age of the output lease's last refresh (growing past its ttl means
    another job may take the output). Tagged run=<output location>."""

    def __init__(self, output: str) -> None:
        self.gauges = RayMetrics(output, prefix=REFINE_PREFIX, job="refine")

    def __call__(
        self, *, num_done: int, num_failed: int, num_images: int, wall_s: float, lease_age_s: float
    ) -> None:
        figures = {
            "shards_done": num_done,
            "shards_failed": num_failed,
            "images_per_s": num_images / max(wall_s, 1e-9),
            "lease_age_s": lease_age_s,
        }
        self.gauges(num_images, figures)  # cur_nimg: images refined so far
