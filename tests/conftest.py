"""Shared fixtures: small real digit shards, an initial checkpoint, one local Ray instance, S3."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Ray workers inherit this; the skip of DeepSpeed's shm op build is in engine.py.
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# Fake credentials for the loopback S3 server, set before any Ray worker starts so workers
# inherit them (as in s3fs's own suite); real credentials never reach a test.
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_SESSION_TOKEN="testing",
)
os.environ.pop("AWS_PROFILE", None)


@pytest.fixture(scope="session")
def digit_shards(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """400 simulated digits in 4 shards, the 3,000 unlabeled real ones, and the labeled eval part."""
    from simgan_dist.data.build import (
        build_real_digits,
        build_real_train_labeled,
        build_synthetic_digits,
    )

    root = tmp_path_factory.mktemp("shards")
    build_synthetic_digits(root / "digits-synth", 400, 100, seed=0)
    build_real_digits(root / "digits-real-train", root / "digits-real-eval", 1000)
    build_real_train_labeled(root / "digits-real-train-labeled", 1000)
    return {
        "synthetic": root / "digits-synth",
        "real": root / "digits-real-train",
        "real_eval": root / "digits-real-eval",
        "real_train_labeled": root / "digits-real-train-labeled",
    }


@pytest.fixture(scope="session")
def photo_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits-on-photographs corpora with 200 simulated digits (the real ones are whole)."""
    from simgan_dist.data.build import build_photo_digits

    root = tmp_path_factory.mktemp("photo-shards")
    build_photo_digits(root, seed=0, num_synthetic=200, samples_per_shard=100)
    return root


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray (2 CPUs, as in CI) shared by every Ray test: each start costs ~5 s."""
    import ray

    from simgan_dist.train.ray_start import ensure_ray

    ensure_ray(num_cpus=2)  # the shipped start: loopback only
    yield ray
    ray.shutdown()


@pytest.fixture
def live_actors(ray_local):
    """A function listing the actors of a class (Ray Train workers unless said) alive now. The
    address is explicit: without it the state API looks for "the" local Ray and fails when another
    one runs on the machine."""
    from ray.util.state import list_actors

    def workers(class_name: str = "RayTrainWorker") -> list:
        return list_actors(
            address=ray_local.get_runtime_context().gcs_address,
            filters=[("class_name", "=", class_name), ("state", "=", "ALIVE")],
        )

    return workers


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


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 HTTP server (moto) on 127.0.0.1, started by the tests; yields its endpoint."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_server: str):
    """A fresh bucket on the loopback server (the server is reset first)."""
    import boto3
    import requests

    requests.post(f"{s3_server}/moto-api/reset", timeout=10)
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    client.create_bucket(Bucket="simgan-test")
    return client


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """A debug-preset checkpoint written the way training writes one (rank 0 of 1)."""
    from simgan_dist.config import load_config
    from simgan_dist.train.session import save_initial_checkpoint

    cfg = load_config(preset="debug", overrides=["run.num_workers=1"])
    return save_initial_checkpoint(cfg, tmp_path / "run" / "checkpoint-000000000096")


@pytest.fixture
def noisy_checkpoint(tmp_path: Path) -> Path:
    """A debug-preset checkpoint of a refiner with a pixel-noise input whose noise projection
    visibly changes the image (a fresh projection is small, which would leave the noise untested)."""
    import torch

    from simgan_dist.config import load_config
    from simgan_dist.train.checkpoint import NETWORKS_FILE
    from simgan_dist.train.session import save_initial_checkpoint

    cfg = load_config(
        preset="debug", overrides=["run.num_workers=1", "model.refiner_noise_channels=2"]
    )
    directory = save_initial_checkpoint(cfg, tmp_path / "noise-run" / "checkpoint-000000000096")
    nets = torch.load(directory / NETWORKS_FILE, weights_only=True)
    generator = torch.Generator().manual_seed(0)
    for name, tensor in nets["refiner"].items():
        if name.startswith("noise_maps."):
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.3)
    torch.save(nets, directory / NETWORKS_FILE)
    return directory


# The quick tier (`pytest -m quick`, the edit loop's and pre-commit's): unit tests that start no
# Ray, no S3 server and no process group, and are not marked slow. CI runs every tier.
NOT_QUICK_FIXTURES = {"ray_local", "live_actors", "s3_server", "s3_bucket", "photo_shards"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        in_unit = "tests/unit/" in item.nodeid or item.nodeid.startswith("unit/")
        heavy = NOT_QUICK_FIXTURES & set(getattr(item, "fixturenames", ()))
        marked = {m.name for m in item.iter_markers()} & {"ray", "gpu", "slow"}
        if in_unit and not heavy and not marked:
            item.add_marker(pytest.mark.quick)
