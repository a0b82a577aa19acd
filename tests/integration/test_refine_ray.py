"""Refinement on Ray: a job SIGKILLed mid-way and rerun gives every key exactly once (local S3
server), half-done states are redone, bad input is skipped and reported, bad outputs stop early."""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import webdataset

from simgan_dist.config import load_config
from simgan_dist.data.reader import read_samples
from simgan_dist.io.location import Location
from simgan_dist.io.shardio import encode_png, read_manifest, resolve_shard_urls, write_shards
from simgan_dist.refine import ledger as refine_ledger
from simgan_dist.refine.ray_pool import RefineError, refine_shards
from simgan_dist.refine.shard import RefineSettings
from simgan_dist.train.session import save_initial_checkpoint

pytestmark = pytest.mark.ray

NUM_SHARDS, PER_SHARD = 24, 40
ONE_WORKER = RefineSettings(batch_size=16, num_workers=1, threads_per_worker=1)


def _samples(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        yield f"s{i:05d}", rng.integers(0, 256, (28, 28), dtype=np.uint8), {"label": i % 10}


@pytest.fixture(scope="module")
def slow_checkpoint(tmp_path_factory) -> Path:
    """A 28x28 refiner wide enough that a shard takes a noticeable time, so a kill lands mid-run."""
    cfg = load_config(
        preset="debug", overrides=["model.refiner_features=48", "model.refiner_blocks=2"]
    )
    return save_initial_checkpoint(cfg, tmp_path_factory.mktemp("run") / "checkpoint-000000000000")


def _keys(location: str, options: dict | None = None) -> collections.Counter:
    corpus = Location.of(location, options)
    urls = resolve_shard_urls(corpus)
    return collections.Counter(k for k, _, _, _ in read_samples(urls, store=corpus))


def _bucket_keys(client, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket="simgan-test", Prefix=prefix)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def test_killed_job_rerun_gives_every_key_exactly_once(
    ray_local, s3_server, s3_bucket, slow_checkpoint, tmp_path
) -> None:
    options = {"endpoint_url": s3_server}
    source, output = "s3://simgan-test/synth", "s3://simgan-test/refined"
    write_shards(_samples(NUM_SHARDS * PER_SHARD), Location(source, options), "synth", PER_SHARD)
    # The driver runs in its own process, joined to this session's Ray, and is SIGKILLed once a
    # few shards are published: its actors die with it, mid-shard or between shards.
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    cmd = [sys.executable, "-m", "simgan_dist.cli", "refine", "--checkpoint", str(slow_checkpoint),
           "--input", source, "--output", output, "--storage-option", f"endpoint_url={s3_server}",
           "--num-workers", "1", "--threads-per-worker", "1", "--batch-size", "16", "--no-progress"]  # fmt: skip
    log = tmp_path / "driver.log"
    with open(log, "wb") as out:
        driver = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 120
        done = []
        while len(done) < 3 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
            done = [k for k in _bucket_keys(s3_bucket, "refined/_refine/done/") if ".tmp-" not in k]
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    assert 3 <= len(done) < NUM_SHARDS, log.read_text()[-3000:]
    assert "refined/manifest.json" not in _bucket_keys(s3_bucket, "refined/")

    summary = refine_shards(
        slow_checkpoint, source, output, ONE_WORKER, storage_options=options, progress=False
    )
    assert summary["num_shards_skipped_already_done"] >= len(done)
    assert summary["num_shards_refined"] == NUM_SHARDS - summary["num_shards_skipped_already_done"]
    keys = _keys(output, options)  # through the manifest, read back from the bucket
    assert keys == collections.Counter({k: 1 for k, _, _ in _samples(NUM_SHARDS * PER_SHARD)})
    assert read_manifest(Location(output, options)).num_samples == NUM_SHARDS * PER_SHARD
    assert not [k for k in _bucket_keys(s3_bucket, "refined/") if ".tmp-" in k]
    assert "refined/_refine/report.json" in _bucket_keys(s3_bucket, "refined/_refine/")


def test_half_done_states_are_redone_once(
    ray_local, digit_shards, slow_checkpoint, tmp_path
) -> None:
    out = tmp_path / "refined"
    refine_shards(slow_checkpoint, str(digit_shards["synthetic"]), out, ONE_WORKER, progress=False)
    names = sorted(p.name for p in out.glob("*.tar"))
    # Killed between publishing a shard and its record; a shard cut short by hand (its record
    # stays); a temporary left by a killed writer.
    (out / refine_ledger.DONE_DIR / f"{names[0]}.json").unlink()
    with open(out / names[1], "r+b") as f:
        f.truncate(1024)
    (out / f"{names[2]}.tmp-0123456789ab").write_bytes(b"partial")
    (out / "manifest.json").unlink()
    summary = refine_shards(
        slow_checkpoint, str(digit_shards["synthetic"]), out, ONE_WORKER, progress=False
    )
    assert summary["num_shards_refined"] == 2 and summary["num_shards_skipped_already_done"] == 2
    assert _keys(str(out)) == collections.Counter(_keys(str(digit_shards["synthetic"])).keys())
    assert not list(out.glob("*.tmp-*"))

    other = save_initial_checkpoint(
        load_config(preset="debug"), tmp_path / "other" / "checkpoint-1"
    )
    with pytest.raises(ValueError, match="refined with"):
        refine_shards(other, str(digit_shards["synthetic"]), out, ONE_WORKER, progress=False)


def _bad_input(digit_shards, root: Path) -> tuple[Path, set[str]]:
    """Three shards: good, one with an undecodable sample, one cut short; and the usable keys."""
    root.mkdir()
    good = sorted(Path(digit_shards["synthetic"]).glob("*.tar"))
    shutil.copy(good[0], root / "a-good.tar")
    keys = set(_keys(str(root / "a-good.tar")))
    with webdataset.TarWriter(str(root / "b-badsample.tar")) as w:
        for i in range(5):
            png = b"not a png" if i == 2 else encode_png(np.zeros((28, 28), np.uint8))
            w.write({"__key__": f"b{i}", "png": png, "json": b'{"label": 1}'})
    keys |= {f"b{i}" for i in range(5) if i != 2}
    data = good[1].read_bytes()
    (root / "c-truncated.tar").write_bytes(data[: len(data) // 2 + 100])
    before_damage = set(_keys(str(root / "c-truncated.tar")))  # read_samples skips the rest
    assert 0 < len(before_damage) < 100
    return root, keys | before_damage


def test_bad_input_is_skipped_and_reported_or_stops(
    ray_local, digit_shards, slow_checkpoint, tmp_path
) -> None:
    source, usable = _bad_input(digit_shards, tmp_path / "in")
    out = tmp_path / "refined"
    summary = refine_shards(slow_checkpoint, str(source), out, ONE_WORKER, progress=False)
    assert _keys(str(out)) == collections.Counter(usable)
    skipped = " ".join(summary["skipped"])
    assert "b-badsample.tar key b2" in skipped and "c-truncated.tar" in skipped
    assert summary["num_images"] == len(usable) and summary["num_skipped_samples"] >= 2
    report = (out / refine_ledger.REPORT_NAME).read_text()
    assert "b-badsample.tar key b2" in report

    stop = RefineSettings(**{**vars(ONE_WORKER), "on_bad_sample": "stop"})
    with pytest.raises(RefineError, match="bad sample"):
        refine_shards(slow_checkpoint, str(source), tmp_path / "stopped", stop, progress=False)
    assert not (tmp_path / "stopped" / "manifest.json").exists()
    stopped = json.loads((tmp_path / "stopped" / refine_ledger.REPORT_NAME).read_text())
    assert "error" in stopped
    # Issue 18, item 16: shards that finished while the job was stopping are counted.
    on_disk = refine_ledger.read_done(str(tmp_path / "stopped"))
    assert stopped["num_shards"] == sum(1 for r in on_disk.values() if r["shard"])
    assert stopped["num_images"] == sum(r["num_samples"] for r in on_disk.values())


def test_vanished_shard_is_not_done_and_a_rerun_after_restore_completes(
    ray_local, slow_checkpoint, tmp_path
) -> None:
    """Issue 18, items 2-3: a shard deleted from under the job is retried, not recorded as an
    empty done shard; a damaged one counts every sample it lost (from the manifest)."""
    corpus = tmp_path / "corpus"
    write_shards(_samples(40), corpus, "synth", samples_per_shard=10)
    gone, cut = corpus / "synth-000001.tar", corpus / "synth-000002.tar"
    kept = gone.read_bytes()
    gone.unlink()
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) // 2 + 100])
    out = tmp_path / "refined"
    with pytest.raises(RefineError, match="1 input shards could not be read.*synth-000001"):
        refine_shards(slow_checkpoint, str(corpus), out, ONE_WORKER, progress=False)
    report = json.loads((out / refine_ledger.REPORT_NAME).read_text())
    assert len(report["failed_shards"]) == 1 and "FileNotFoundError" in report["failed_shards"][0]
    assert len(report["damaged_shards"]) == 1 and "synth-000002" in report["damaged_shards"][0]
    num_cut = sum(1 for k in _keys(str(out)) if k.startswith("s0002"))
    assert report["num_lost_samples"] == 10 - num_cut > 0
    assert report["num_skipped_samples"] == report["num_lost_samples"]
    assert "synth-000001.tar" not in refine_ledger.read_done(str(out))

    gone.write_bytes(kept)  # restored: the rerun refines exactly what was missing
    summary = refine_shards(slow_checkpoint, str(corpus), out, ONE_WORKER, progress=False)
    assert summary["num_shards_refined"] == 1 and not summary["failed_shards"]
    assert _keys(str(out)) == collections.Counter(
        k for k, _, _ in _samples(40) if not k.startswith("s0002") or int(k[1:]) - 20 < num_cut
    )


def test_unwritable_output_stops_before_work(
    s3_server, s3_bucket, digit_shards, slow_checkpoint, tmp_path
) -> None:
    started = time.monotonic()
    with pytest.raises(OSError, match="cannot be written"):
        refine_shards(
            slow_checkpoint, str(digit_shards["synthetic"]), "s3://no-such-bucket/out",
            storage_options={"endpoint_url": s3_server}, progress=False,
        )  # fmt: skip
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(OSError, match="cannot be written"):
        refine_shards(slow_checkpoint, str(digit_shards["synthetic"]), tmp_path / "file" / "out")
    assert time.monotonic() - started < 30  # no worker was started


def _tree_digest(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize("where", ["same", "inside"])
def test_output_overlapping_the_input_is_refused_and_the_input_kept(
    where: str, slow_checkpoint, tmp_path
) -> None:
    corpus = tmp_path / "corpus"
    write_shards(_samples(30), corpus, "synth", samples_per_shard=10)
    before = _tree_digest(corpus)
    output = corpus if where == "same" else corpus / "refined"
    with pytest.raises(ValueError, match="overlaps the input"):
        refine_shards(slow_checkpoint, str(corpus), output, ONE_WORKER, progress=False)
    assert _tree_digest(corpus) == before


def test_bench_refine_prints_both_figures(ray_local, monkeypatch, tmp_path) -> None:
    from simgan_dist.bench import refine as bench_refine
    from simgan_dist.bench import refine_parts

    monkeypatch.setattr(bench_refine, "BARE_SECONDS", 0.2)
    monkeypatch.setattr(refine_parts, "PART_SECONDS", 0.2)
    result = bench_refine.bench_refine("debug", 64, 32, ONE_WORKER, work_dir=tmp_path,
                                       node_cpus=16, node_gpus=2)  # fmt: skip
    assert result["num_images"] == 64 and result["bare_images_per_s"] > 0
    assert result["ratio"] == pytest.approx(
        result["e2e_steady_images_per_s"] / result["bare_images_per_s"]
    )
    # FLOPs of both figures against the peak measured in the run (issue 17), and the verdict.
    flops = result["flops"]
    assert flops["peak"]["threads"] == ONE_WORKER.threads_per_worker
    assert len(flops["peak"]["parts_peak_flops"]) == 2  # before and after the Ray run
    for name, ips in (("bare", result["bare_images_per_s"]),
                      ("e2e_steady", result["e2e_steady_images_per_s"])):  # fmt: skip
        row = flops[name]
        assert row["achieved_flops"] == pytest.approx(flops["per_image"]["refine_forward"] * ips)
        assert 0 < row["share_of_measured_peak"] <= 2.0, name
    assert result["trust"]["trusted"] == (not result["trust"]["reasons"])
    text = bench_refine.format_refine_table(result)
    assert "ratio end-to-end / bare" in text and "projected for 1,000,000 images" in text
    assert "of peak" in text and text.splitlines()[-1].startswith("trust: ")
    # Issue 29 item 2: the per-image parts and a 16-CPU, 2-GPU node's projection from them.
    parts = result["parts"]
    assert parts["decode_images_per_s"] > 0 and parts["encode_images_per_s"] > 0
    projection = parts["projection"]
    assert projection["node_images_per_s"] == pytest.approx(
        min(2 * result["bare_images_per_s"], 16 * parts["codec_images_per_s"])
    )
    assert "projected for a node of 16 CPUs and 2 GPUs" in text


def test_a_second_job_on_the_same_output_is_refused_and_the_first_completes(
    ray_local, s3_server, s3_bucket, slow_checkpoint, tmp_path
) -> None:
    """Issue 18, item 5: two refine jobs on one output; the second stops before writing anything,
    the first finishes with every key once and its own report."""
    from simgan_dist.refine.lease import LEASE_NAME, OutputBusyError

    options = {"endpoint_url": s3_server}
    source, output = "s3://simgan-test/synth-busy", "s3://simgan-test/refined-busy"
    write_shards(_samples(NUM_SHARDS * PER_SHARD), Location(source, options), "synth", PER_SHARD)
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    cmd = [sys.executable, "-m", "simgan_dist.cli", "refine", "--checkpoint", str(slow_checkpoint),
           "--input", source, "--output", output, "--storage-option", f"endpoint_url={s3_server}",
           "--num-workers", "1", "--threads-per-worker", "1", "--batch-size", "16", "--no-progress"]  # fmt: skip
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 120
    while f"refined-busy/{LEASE_NAME}" not in _bucket_keys(s3_bucket, "refined-busy/_refine/"):
        assert first.poll() is None and time.monotonic() < deadline, first.stdout.read()[-3000:]
        time.sleep(0.05)
    second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    with pytest.raises(OutputBusyError, match="another refine job is writing this output"):
        refine_shards(
            slow_checkpoint, source, output, ONE_WORKER, storage_options=options, progress=False
        )
    assert first.poll() is None, "the first job ended before the second tried: test too short"
    assert second.returncode == 1
    last = second.stderr.strip().splitlines()[-1]
    assert last.startswith(f"simgan refine: {output}: another refine job is writing"), last
    assert "Traceback" not in second.stderr
    log = first.communicate(timeout=300)[0].decode()
    assert first.returncode == 0, log[-3000:]
    assert _keys(output, options) == collections.Counter(
        {k: 1 for k, _, _ in _samples(NUM_SHARDS * PER_SHARD)}
    )
    report = json.loads(s3_bucket.get_object(
        Bucket="simgan-test", Key=f"refined-busy/{refine_ledger.REPORT_NAME}")["Body"].read())  # fmt: skip
    assert "error" not in report and report["num_images"] == NUM_SHARDS * PER_SHARD
    assert f"refined-busy/{LEASE_NAME}" not in _bucket_keys(s3_bucket, "refined-busy/")


def test_a_plain_webdataset_jpg_cls_corpus_refines_to_png_json(
    ray_local, checkpoint, tmp_path
) -> None:
    """Shards as users have them (webdataset.TarWriter, jpg + cls, no manifest): every key
    refined once, as PNG with a json that keeps the label."""
    import io

    from PIL import Image

    corpus = tmp_path / "user-corpus"
    corpus.mkdir()
    for shard in range(2):
        with webdataset.TarWriter(str(corpus / f"part-{shard}.tar")) as sink:
            for key, img, meta in _samples(10, seed=shard):
                buf = io.BytesIO()
                Image.fromarray(img).save(buf, format="JPEG")
                sink.write({"__key__": f"{shard}-{key}", "jpg": buf.getvalue(),
                            "cls": str(meta["label"]).encode()})  # fmt: skip
    out = tmp_path / "refined"
    summary = refine_shards(checkpoint, str(corpus), out, ONE_WORKER, progress=False)
    assert summary["num_images"] == 20 and summary["num_skipped_samples"] == 0
    refined = list(read_samples(resolve_shard_urls(str(out)), "stop"))
    assert sorted(k for k, _, _, _ in refined) == sorted(
        f"{s}-s{i:05d}" for s in range(2) for i in range(10)
    )
    assert all(meta["label"] == int(key[-1]) % 10 for key, _, meta, _ in refined)
    with webdataset.WebDataset(str(out / "part-0.tar"), shardshuffle=False) as first:
        assert {"png", "json"} <= set(next(iter(first)))
