"""Shared fixtures: small real digit shards, and one local Ray instance for the whole session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Ray workers inherit this; the skip of DeepSpeed's shm op build is in engine.py.
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session")
def digit_shards(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """400 simulated digits in 4 shards, the 3,000 unlabeled real ones, and the labeled eval part."""
    from simgan_dist.shard_build import build_real_digits, build_synthetic_digits

    root = tmp_path_factory.mktemp("shards")
    build_synthetic_digits(root / "digits-synth", 400, 100, seed=0)
    build_real_digits(root / "digits-real-train", root / "digits-real-eval", 1000)
    return {
        "synthetic": root / "digits-synth",
        "real": root / "digits-real-train",
        "real_eval": root / "digits-real-eval",
    }


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray (2 CPUs, as in CI) shared by every Ray test: each start costs ~5 s."""
    import ray

    ray.init(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture
def debug_overrides(digit_shards: dict[str, Path], tmp_path: Path):
    """--set strings for the debug preset on the session's shards, writing under tmp_path."""

    def make(**fields: object) -> list[str]:
        base = {
            "data.synthetic": digit_shards["synthetic"],
            "data.real": digit_shards["real"],
            "run.storage_path": tmp_path,
        }
        base.update(fields)
        return [f"{k}={v}" for k, v in base.items()]

    return make
