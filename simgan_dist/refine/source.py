"""The refiner a refine job runs, from a run, a checkpoint or an export, and the lineage its samples record.

A checkpoint's lineage is computed from its files; an export carries its source checkpoint's
lineage in refiner.json (written by `simgan export`), so shards refined from an export are the
same, json and all, as those refined from the checkpoint it came from, and one output may be
finished with either.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simgan_dist.config import Config, ModelConfig
from simgan_dist.data.reader import read_samples
from simgan_dist.errors import InputError
from simgan_dist.io import urls
from simgan_dist.io.location import Location
from simgan_dist.io.shardio import image_chw
from simgan_dist.model.exported import ARCH_FILE, ExportError, architecture_file, read_exported
from simgan_dist.model.networks import Refiner
from simgan_dist.train.checkpoint import NETWORKS_FILE, load_refiner

LINEAGE_KEYS = ("checkpoint_id", "checkpoint_sha256", "refiner_config_hash")


@dataclass(frozen=True)
class RefinerSource:
    """A loaded refiner (eval mode, CPU), its model section, and where it came from."""

    refiner: Refiner
    model: ModelConfig
    lineage: dict[str, str]  # what every refined sample records about the refiner
    origin: Path  # the checkpoint directory, or the export's refiner.json (local copies)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def config_hash(section: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(section, sort_keys=True).encode()).hexdigest()[:16]


def lineage_of(cfg: Config, checkpoint_dir: Path, weights_file: Path) -> dict[str, str]:
    """What every refined sample records about the refiner that made it."""
    sections = cfg.to_dict()
    return {
        "checkpoint_id": checkpoint_dir.name,
        "checkpoint_sha256": file_sha256(weights_file),
        "refiner_config_hash": config_hash({"model": sections["model"], "loss": sections["loss"]}),
    }


def open_refiner(where: Location | str | Path) -> RefinerSource:
    """R from a run directory (its newest checkpoint that loads), a checkpoint directory, an
    export directory or its refiner.json; local, or a URI reached with the location's options."""
    location = Location.of(where)
    if location.is_local:
        exported = architecture_file(location.url)
    else:
        exported = _fetch_export(location)
    if exported is not None:
        return _from_export(exported)
    refiner, cfg, directory = load_refiner(location)
    lineage = lineage_of(cfg, directory, directory / NETWORKS_FILE)
    return RefinerSource(refiner, cfg.model, lineage, directory)


def check_input_images(
    source: RefinerSource, input_location: Location | str, shard_url: str
) -> None:
    """Stop in one line naming both when the input's first good sample is not the (C, H, W) the
    refiner takes, e.g. a grey refiner on colour shards. Without it every sample would be
    skipped as a bad one, one warning each, and the job would end with nothing refined."""
    model = source.model
    expected = (model.image_channels, model.image_height, model.image_width)
    # The reader is dropped (and its tar closed) as soon as it has yielded one sample.
    store = Location.of(input_location)
    first = next(read_samples([shard_url], "skip", store=store), None)
    if first is None:
        return  # no readable sample here: the job itself reports the shard
    key, img, _, _ = first
    found = image_chw(img)
    if found == expected:
        return
    if found[0] != expected[0]:
        want, has = f"{expected[0]}-channel", f"{found[0]}-channel"
    else:  # height x width, as --size and the configs write it
        want, has = f"{expected[1]}x{expected[2]}", f"{found[1]}x{found[2]}"
    raise InputError(
        f"refiner {source.origin} expects {want} images, {input_location} holds {has} ones "
        f"(key {key} in {urls.basename(shard_url)})"
    )


def _from_export(arch_file: Path) -> RefinerSource:
    loaded = read_exported(arch_file)
    lineage = (loaded.info.get("source") or {}).get("lineage")
    if not isinstance(lineage, dict) or sorted(lineage) != sorted(LINEAGE_KEYS):
        raise ExportError(
            f"{loaded.arch_file}: source.lineage: must hold {', '.join(LINEAGE_KEYS)} "
            "(what refined samples record about their refiner)"
        )
    return RefinerSource(
        loaded.refiner, loaded.model, {k: str(v) for k, v in lineage.items()}, loaded.arch_file
    )


def _fetch_export(location: Location) -> Path | None:
    """A local copy of the export at a URI (the directory or its .json), or None when the
    location holds no export."""
    if location.name.endswith(".json"):
        return location.parent.fetch_cached() / location.name
    if ARCH_FILE not in location.list():
        return None
    return location.fetch_cached() / ARCH_FILE
