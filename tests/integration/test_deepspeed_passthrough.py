"""engine.deepspeed through a real run: 2 Ray Train workers with DeepSpeed's CSV and TensorBoard
monitors and its flops profiler switched on from the config, on CPU."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from simgan_dist.cli import main


@pytest.mark.ray
def test_deepspeed_monitor_and_flops_profiler_run_from_the_config(
    ray_local, debug_overrides, tmp_path: Path
) -> None:
    out = tmp_path / "deepspeed"
    passthrough = (
        f"{{csv_monitor: {{enabled: true, output_path: {out}}},"
        f" tensorboard: {{enabled: true, output_path: {out / 'tb'}}},"
        f" flops_profiler: {{enabled: true, profile_step: 2, output_file: {out / 'flops.txt'}}}}}"
    )
    sets = [*debug_overrides(), "run.name=ds", f"engine.deepspeed={passthrough}"]
    main(["train", "--preset", "debug", *[arg for s in sets for arg in ("--set", s)]])
    for engine in ("refiner", "discriminator"):
        rows = list(csv.DictReader((out / f"simgan-{engine}" / "Train_Samples_lr.csv").open()))
        assert rows and all(float(r["lr"]) > 0 for r in rows)
        assert list((out / "tb" / f"simgan-{engine}").glob("events.out.tfevents.*"))
        assert "DeepSpeed Flops Profiler" in (out / f"flops-{engine}.txt").read_text()
    assert (tmp_path / "ds" / "checkpoint-000000000144").is_dir()
