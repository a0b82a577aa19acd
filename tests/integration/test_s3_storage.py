"""Checkpoints on object storage: a run whose storage_path is s3:// on a loopback S3 server
trains, resumes from the bucket, and refines from a checkpoint in the bucket."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simgan_dist.cli import main

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
    """Issue 15: the endpoint is given once (top-level storage_options, fsspec's spelling), and
    everything the run writes lands in the bucket: checkpoints, config, metrics, TensorBoard
    events and grids; the working directory gets nothing."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    store = "s3://simgan-test/runs"
    args = ["train", "--preset", "debug", "--set", f"storage_options.endpoint_url={s3_server}"]
    for item in debug_overrides(**{"run.storage_path": store, "run.name": "s3run"}):
        args += ["--set", item]
    main(args)
    keys = _keys(s3_bucket, "runs/s3run/")
    final = "runs/s3run/checkpoint-000000000144/"
    assert {
        final + f for f in ("networks.pt", "state.json", "rank-0000.pt", "rank-0001.pt")
    } <= keys
    assert {"runs/s3run/config.yaml", "runs/s3run/metrics.jsonl"} <= keys
    assert any(k.startswith("runs/s3run/tensorboard/events.") for k in keys), keys
    assert any(k.startswith("runs/s3run/grids/grid-") for k in keys), keys
    assert not (tmp_path / "runs").exists()  # nothing needed stays on the local disk
    rows = _metrics(s3_bucket)
    assert rows[-1]["cur_nimg"] == 144

    run_uri = f"{store}/s3run"
    main(["train", "--resume", run_uri, "--storage-option", f"endpoint_url={s3_server}",
          "--set", "schedule.adversarial_nimg=192"])  # fmt: skip
    keys = _keys(s3_bucket, "runs/s3run/")
    assert "runs/s3run/checkpoint-000000000240/networks.pt" in keys
    resumed = _metrics(s3_bucket)
    assert resumed[: len(rows)] == rows  # the store's log continued, not replaced
    assert resumed[-1]["cur_nimg"] == 240 and any(r.get("event") == "resumed" for r in resumed)

    capsys.readouterr()
    main(["refine", "--checkpoint", run_uri, "--storage-option", f"endpoint_url={s3_server}",
          "--input", str(digit_shards["synthetic"]), "--output", "s3://simgan-test/refined"])  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_images"] == 400
    assert summary["checkpoint"].endswith("checkpoint-000000000240")
    assert "refined/manifest.json" in _keys(s3_bucket, "refined/")


def _metrics(client) -> list[dict]:
    body = client.get_object(Bucket="simgan-test", Key="runs/s3run/metrics.jsonl")["Body"].read()
    return [json.loads(line) for line in body.decode().splitlines()]


def test_the_endpoint_has_one_spelling(tmp_path: Path) -> None:
    from simgan_dist.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"run\.storage_path: give the endpoint .* storage_opt"):
        load_config(preset="debug", overrides=[
            "run.storage_path=s3://b/runs?endpoint_override=127.0.0.1:9000&scheme=http"
        ])  # fmt: skip
    shared = {"endpoint_url": "http://127.0.0.1:9000"}
    cfg = load_config(
        {"preset": "debug", "storage_options": shared, "data": {"storage_options": {"a": 1}}}
    )
    assert cfg.run.storage_options == shared
    assert cfg.data.storage_options == {**shared, "a": 1}  # a section's own keys join it
    with pytest.raises(ConfigError, match=r"storage_options may not hold credentials \(secret\)"):
        load_config({"preset": "debug", "storage_options": {"secret": "x"}})


def test_wrong_endpoint_stops_with_clear_error(tmp_path: Path) -> None:
    from simgan_dist.io.location import Location
    from simgan_dist.train.runs import has_checkpoints

    with pytest.raises(OSError, match=r"s3://nobucket/runs/x \(endpoint http://127.0.0.1:1\)"):
        has_checkpoints(Location("s3://nobucket/runs/x", {"endpoint_url": "http://127.0.0.1:1"}))


def test_refine_checkpoint_on_s3_is_read_through_the_storage_options(
    s3_server, s3_bucket, tmp_path: Path, monkeypatch
) -> None:
    """Issue 18, item 15: the endpoint given as --storage-option reaches the checkpoint too, not
    only the shards (before, the checkpoint went to the default AWS host)."""
    import s3fs

    from simgan_dist.config import load_config
    from simgan_dist.train.checkpoint import load_refiner
    from simgan_dist.train.session import save_initial_checkpoint

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


SEARCH_ON_S3 = """
space:
  optim.refiner_lr: {grid: [0.01]}
  score.every_nimg: 32
  score.num_images: 64
  score.classifier_steps: 20
tune:
  name: s3search
  num_samples: 1
  max_concurrent_trials: 1
  scheduler: none
"""


def test_tune_on_s3_keeps_the_experiment_in_the_bucket_and_resumes_from_it(
    ray_local, s3_server, s3_bucket, debug_overrides, tmp_path: Path, monkeypatch, capsys
) -> None:
    """Tune's experiment state, each trial's run and the results table go to the bucket through
    the same fsspec filesystem; the same command again finds the finished search there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    search = tmp_path / "search.yaml"
    search.write_text(SEARCH_ON_S3)
    args = ["tune", "--preset", "debug", "--search", str(search), "--resume-if-exists",
            "--set", f"storage_options.endpoint_url={s3_server}"]  # fmt: skip
    for item in debug_overrides(**{"run.storage_path": "s3://simgan-test/tune"}):
        args += ["--set", item]
    main(args)
    capsys.readouterr()
    keys = _keys(s3_bucket, "tune/s3search/")
    assert {"tune/s3search/search.yaml", "tune/s3search/trials.md"} <= keys, keys
    assert any(k.endswith("/metrics.jsonl") and "/trials/" in k for k in keys), keys
    assert any("/trials/" in k and k.endswith("/networks.pt") for k in keys), keys
    assert any(k.startswith("tune/s3search/experiment_state") for k in keys), keys
    assert not (tmp_path / "runs").exists()

    main(args)  # a resubmitted job: the search is found in the bucket and is already complete
    out = capsys.readouterr().out
    assert "[simgan] search: s3://simgan-test/tune/s3search" in out
    summary = json.loads(out[out.index("\n{") + 1 :])
    assert summary["num_trials"] == 1 and not summary["interrupted"], summary


def test_eval_report_lands_in_the_bucket(s3_server, s3_bucket, digit_shards, capsys) -> None:
    out = "s3://simgan-test/runs/evaluated/eval"
    main(["eval", "--synthetic", str(digit_shards["synthetic"]),
          "--refined", str(digit_shards["synthetic"]), "--real-eval", str(digit_shards["real_eval"]),
          "--out", out, "--storage-option", f"endpoint_url={s3_server}",
          "--num-seeds", "2", "--epochs", "1"])  # fmt: skip
    keys = _keys(s3_bucket, "runs/evaluated/eval/")
    assert {f"runs/evaluated/eval/{n}" for n in ("report.json", "report.md", "grid.png")} <= keys
    assert f"report: {out}/report.md" in capsys.readouterr().out
