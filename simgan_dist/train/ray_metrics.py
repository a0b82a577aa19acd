"""Rank 0's training figures as Ray metrics: Ray's metrics agent exports them to Prometheus and
the dashboard's Metrics view, beside Ray's own (Ray Train V2 keeps reported metrics only with
checkpoints, so without these a running job shows nothing between checkpoints)."""

from __future__ import annotations

import re

from ray.util.metrics import Gauge

PREFIX = "simgan_"  # Ray exports a custom metric under its own name, prefixed by "ray_"


class RayMetrics:
    """A gauge per metric name (losses, D accuracy, images/s, skipped samples, cur_nimg), tagged
    with the run's name, set at every metrics row. Gauges are made on first use, so a name added
    to the loop needs no change here."""

    def __init__(self, run_name: str) -> None:
        self.tags = {"run": run_name}
        self.gauges: dict[str, Gauge] = {}

    def __call__(self, cur_nimg: int, metrics: dict[str, float]) -> None:
        for name, value in {"cur_nimg": float(cur_nimg), **metrics}.items():
            gauge = self.gauges.get(name)
            if gauge is None:
                gauge = Gauge(
                    PREFIX + re.sub(r"[^a-zA-Z0-9_]", "_", name),
                    description=f"simgan-dist training: {name} (rank 0, last metrics row)",
                    tag_keys=("run",),
                )
                self.gauges[name] = gauge
            gauge.set(float(value), tags=self.tags)
