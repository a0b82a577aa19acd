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
from simgan_dist.io import storage, urls
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


def open_refiner(
    location: str | Path, storage_options: dict[str, Any] | None = None
) -> RefinerSource:
    """R from a run directory (its newest checkpoint that loads), a checkpoint directory, an
    export directory or its refiner.json; local, or a URI reached with storage_options."""
    if urls.is_remote(str(location)):
        exported = _fetch_export(str(location), storage_options)
    else:
        exported = architecture_file(location)
    if exported is not None:
        return _from_export(exported)
    refiner, cfg, directory = load_refiner(location, storage_options=storage_options)
    lineage = lineage_of(cfg, directory, directory / NETWORKS_FILE)
    return RefinerSource(refiner, cfg.model, lineage, directory)


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


def _fetch_export(location: str, storage_options: dict[str, Any] | None) -> Path | None:
    """A local copy of the export at a URI (the directory or its .json), or None when the
    location holds no export."""
    parent, name = urls.split(location)
    if name.endswith(".json"):
        return storage.fetch_cached(parent, storage_options) / name
    if ARCH_FILE not in storage.list_names(location, storage_options):
        return None
    return storage.fetch_cached(location, storage_options) / ARCH_FILE
