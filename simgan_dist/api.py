"""The Python API behind `import simgan_dist`: train, refine and export as the CLI does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from simgan_dist.config import Config, ConfigSource, load_config
from simgan_dist.errors import InputError
from simgan_dist.refine.export import export_refiner
from simgan_dist.refine.ray_pool import refine_shards
from simgan_dist.refine.shard import RefineSettings
from simgan_dist.train.checkpoint import load_refiner
from simgan_dist.train.ray_train import run_training
from simgan_dist.train.runs import resume_run, run_location, start_run

__all__ = ["export_refiner", "load_refiner", "refine_corpus", "train_refiner"]


def train_refiner(
    config: Config | ConfigSource | None = None,
    *,
    preset: str | None = None,
    overrides: list[str] | None = None,
    resume: str | Path | None = None,
) -> str:
    """Train a refiner as `simgan train` does (Ray Train + DeepSpeed; a local Ray instance on
    127.0.0.1 unless RAY_ADDRESS names a cluster). config: a Config, or what load_config takes;
    resume: a run to continue instead. Returns the run's location (a directory or URI), which
    load_refiner and refine take. Raises ConfigError, or TrainingError with the workers' error."""
    if resume is not None:
        cfg, out = resume_run(resume, overrides)
    else:
        if not isinstance(config, Config):
            config = load_config(config, preset, overrides)
        elif preset or overrides:
            raise InputError("train: preset and overrides apply to a config source, not a Config")
        cfg, out = start_run(config)
    run_training(cfg, out)
    return run_location(cfg).url


def refine_corpus(
    checkpoint: str | Path,
    input_location: str,
    output: str | Path,
    *,
    storage_options: dict[str, Any] | None = None,
    progress: bool = False,
    **settings: Any,
) -> dict[str, Any]:
    """Refine every shard of input_location into output, as `simgan refine` does (exactly once,
    resumable). checkpoint: a run, checkpoint or export directory (or URI). settings: RefineSettings fields (batch_size, num_workers, num_variants, ...).
    Returns the summary that output/_refine/report.json also holds."""
    return refine_shards(
        checkpoint, input_location, output, RefineSettings(**settings),
        storage_options=storage_options, progress=progress,
    )  # fmt: skip
