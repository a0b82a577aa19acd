"""Checkpoints on object storage: a run whose storage_path is s3:// on a loopback S3 server
trains, resumes from the bucket, and refines from a checkpoint in the bucket."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simgan_dist.cli import main
from simgan_dist.io import storage

pytestmark = pytest.mark.ray


def _keys(client, prefix: str) -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket="simgan-test", Prefix=prefix)
    return {obj["Key"] for page in pages for obj in page.get("Contents", [])}


def test_train_resume_refine_on_s3(
    ray_local,
    s3_server,
    s3_bucket,
    debug_overrides,
    digit_shards,
    tmp_path: Path,
    monkeypatch,
    capsys,
) -> None:
    monkeypatch.chdir(tmp_path)  # local outputs (metrics, grids) go to ./runs/<name>
    endpoint = s3_server.removeprefix("http://")
    store = f"s3://simgan-test/runs?endpoint_override={endpoint}&scheme=http"
    args = ["train", "--preset", "debug"]
    for item in debug_overrides(**{"run.storage_path": store, "run.name": "s3run"}):
        args += ["--set", item]
    main(args)
    keys = _keys(s3_bucket, "runs/s3run/")
    final = "runs/s3run/checkpoint-000000000144/"
    assert {
        final + f for f in ("networks.pt", "state.json", "rank-0000.pt", "rank-0001.pt")
    } <= keys
    assert "runs/s3run/config.yaml" in keys
    assert (tmp_path / "runs" / "s3run" / "metrics.jsonl").exists()

    run_uri = storage.join(store, "s3run")
    main(["train", "--resume", run_uri, "--set", "schedule.adversarial_nimg=192"])
    assert "runs/s3run/checkpoint-000000000240/networks.pt" in _keys(s3_bucket, "runs/s3run/")

    capsys.readouterr()
    main(
        [
            "refine",
            "--checkpoint",
            run_uri,
            "--input",
            str(digit_shards["synthetic"]),
            "--output",
            str(tmp_path / "refined"),
        ]
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_images"] == 400
    assert summary["checkpoint"].endswith("checkpoint-000000000240")


def test_storage_locations_keep_endpoint_query() -> None:
    uri = "s3://bucket/runs?endpoint_override=127.0.0.1:9000&scheme=http"
    joined = storage.join(uri, "run-a")
    assert joined == "s3://bucket/runs/run-a?endpoint_override=127.0.0.1:9000&scheme=http"
    assert storage.split(joined) == (uri, "run-a")
    assert storage.join("/tmp/runs", "x") == "/tmp/runs/x"
    assert not storage.is_uri("/tmp/runs") and storage.is_uri(uri)


def test_wrong_endpoint_stops_with_clear_error(tmp_path: Path) -> None:
    from simgan_dist.train.runs import has_checkpoints

    with pytest.raises(OSError):
        has_checkpoints("s3://nobucket/runs/x?endpoint_override=127.0.0.1:1&scheme=http")


def test_refine_checkpoint_on_s3_is_read_through_the_storage_options(
    s3_server, s3_bucket, tmp_path: Path, monkeypatch
) -> None:
    """Issue 18, item 15: the endpoint given as --storage-option reaches the checkpoint too, not
    only the shards (before, the checkpoint went to the default AWS host)."""
    import s3fs

    from simgan_dist.config import load_config
    from simgan_dist.train.checkpoint import load_refiner, save_initial_checkpoint

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    local = save_initial_checkpoint(
        load_config(preset="debug"), tmp_path / "checkpoint-000000000007"
    )
    fs = s3fs.S3FileSystem(endpoint_url=s3_server)
    fs.put(str(local), "simgan-test/opts-run/", recursive=True)
    options = {"endpoint_url": s3_server}
    for location in (
        "s3://simgan-test/opts-run",
        "s3://simgan-test/opts-run/checkpoint-000000000007",
    ):
        refiner, cfg, directory = load_refiner(location, storage_options=options)
        assert directory.name == "checkpoint-000000000007" and cfg.model.image_height == 28
        assert refiner.state_dict().keys() == load_refiner(local)[0].state_dict().keys()
    with pytest.raises(ValueError, match="either in the URI's query or as storage options"):
        load_refiner(
            f"s3://simgan-test/opts-run?endpoint_override={s3_server}", storage_options=options
        )
