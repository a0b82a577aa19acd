"""`simgan refine` from an export: the same shards, json and lineage included, as from the
checkpoint it came from (a refiner with a pixel-noise input, two variants, on local Ray); an
export and a checkpoint may finish one output; an export on the loopback S3 server is read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from simgan_dist.cli import main
from simgan_dist.data.reader import read_samples
from simgan_dist.io.location import Location
from simgan_dist.io.shardio import resolve_shard_urls
from simgan_dist.model.exported import ARCH_FILE
from simgan_dist.refine.source import open_refiner

REFINE = ["--batch-size", "64", "--num-workers", "1", "--threads-per-worker", "1", "--no-progress"]


def _samples(location: Path) -> dict[str, tuple[bytes, dict]]:
    """key -> (PNG bytes, json) of every refined sample."""
    found = {}
    for url in resolve_shard_urls(str(location)):
        for key, image, meta, _ in read_samples([url]):
            meta = {k: v for k, v in meta.items() if not k.startswith("__")}
            found[key] = (image.tobytes(), meta)
    return found


def _refine(checkpoint: Path, source: Path, output: Path, capsys) -> dict:
    main(["refine", "--checkpoint", str(checkpoint), "--input", str(source),
          "--output", str(output), "--variants", "2", *REFINE])  # fmt: skip
    return json.loads(capsys.readouterr().out)


@pytest.mark.ray
def test_refine_from_an_export_equals_refine_from_its_checkpoint(
    ray_local, noisy_checkpoint, digit_shards, tmp_path, capsys
) -> None:
    export = tmp_path / "export"
    main(["export", str(noisy_checkpoint.parent), "--out", str(export)])
    assert "max abs diff" in capsys.readouterr().out
    synthetic = digit_shards["synthetic"]
    from_run = _refine(noisy_checkpoint.parent, synthetic, tmp_path / "from-run", capsys)
    from_export = _refine(export / ARCH_FILE, synthetic, tmp_path / "from-export", capsys)
    assert from_run["num_images"] == from_export["num_images"] == 2 * len(_samples(synthetic))
    assert from_export["checkpoint"] == str(export / ARCH_FILE)
    refined_run, refined_export = (
        _samples(tmp_path / "from-run"),
        _samples(tmp_path / "from-export"),
    )
    assert refined_run.keys() == refined_export.keys()
    for key, (pixels, meta) in refined_run.items():
        assert refined_export[key] == (pixels, meta), key  # pixels, annotations, lineage
    variants = [
        refined_run[f"{key}_v{v}"][0] for key in list(_samples(synthetic))[:1] for v in (0, 1)
    ]
    assert variants[0] != variants[1]  # the noise input is used: two different refinements

    # One output, begun from the checkpoint and finished from the export: same lineage, accepted.
    mixed = tmp_path / "mixed"
    shutil.copytree(tmp_path / "from-run", mixed)
    first = sorted(p.name for p in (mixed / "_refine" / "done").iterdir())[0]
    (mixed / "_refine" / "done" / first).unlink()
    finished = _refine(export, synthetic, mixed, capsys)
    assert finished["num_shards_refined"] == 1
    assert _samples(mixed) == refined_run


def test_an_export_on_a_store_is_fetched_and_read(
    s3_server, s3_bucket, checkpoint, tmp_path, capsys
) -> None:
    import s3fs

    export = tmp_path / "export"
    main(["export", str(checkpoint), "--out", str(export), "--no-onnx"])
    fs = s3fs.S3FileSystem(endpoint_url=s3_server)
    fs.put(str(export), "simgan-test/exports/", recursive=True)
    options = {"endpoint_url": s3_server}
    local = open_refiner(export)
    for location in (
        "s3://simgan-test/exports/export",
        f"s3://simgan-test/exports/export/{ARCH_FILE}",
    ):
        remote = open_refiner(Location(location, options))
        assert remote.lineage == local.lineage and remote.model == local.model
        assert remote.origin.name == ARCH_FILE and remote.origin.exists()
    # A store location without an export is still read as a run or checkpoint.
    fs.put(str(checkpoint), "simgan-test/runs/run/", recursive=True)
    from_store = open_refiner(Location("s3://simgan-test/runs/run", options))
    assert from_store.lineage == open_refiner(checkpoint).lineage
