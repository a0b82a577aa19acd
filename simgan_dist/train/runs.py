"""Run directories: unique names, absolute paths for Ray workers, the saved config, and --resume."""

from __future__ import annotations

import datetime
import logging
import tempfile
from pathlib import Path
from typing import Any

import torch

from simgan_dist.config import Config, ConfigError, config_to_yaml, load_config, parse_yaml
from simgan_dist.data.catalog import data_location
from simgan_dist.io import urls
from simgan_dist.io.lease import Lease, LeaseBusyError
from simgan_dist.io.location import Location
from simgan_dist.io.shardio import resolve_shard_urls
from simgan_dist.model.networks import build_discriminator, build_refiner

RUN_CONFIG_FILE = "config.yaml"
log = logging.getLogger(__name__)


def absolutize(cfg: Config) -> Config:
    """Ray workers do not share the driver's working directory: make local paths absolute."""
    fix = urls.absolute

    # Empty score locations mean "use data.*": they stay empty.
    score = {
        k: fix(v) for k in ("synthetic", "real", "real_labeled") if (v := getattr(cfg.score, k))
    }
    return cfg.replace(
        data={"synthetic": fix(cfg.data.synthetic), "real": fix(cfg.data.real)},
        run={"storage_path": fix(cfg.run.storage_path)},
        score=score,
    )


def new_run_name(prefix: str = "simgan") -> str:
    return f"{prefix}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S-%f')}"


def has_checkpoints(run: Location | str) -> bool:
    return any(name.startswith("checkpoint-") for name in Location.of(run).list())


def storage_root(cfg: Config) -> Location:
    """run.storage_path, where runs go, with run.storage_options."""
    return Location(cfg.run.storage_path, cfg.run.storage_options)


def run_location(cfg: Config) -> Location:
    """Where Ray Train keeps the run's checkpoints: a local directory or an object-store URI."""
    return storage_root(cfg).join(cfg.run.name)


def output_dir(cfg: Config) -> Path:
    """Where the workers write metrics, TensorBoard and grids: the run directory itself when
    storage is local; for an object store, a staging directory under the node's temp dir that
    the workers copy into the run location at each checkpoint and at the end (run_outputs.py)."""
    if urls.is_remote(cfg.run.storage_path):
        return Path(tempfile.gettempdir()) / "simgan-runs" / cfg.run.name
    return Path(cfg.run.storage_path) / cfg.run.name


def _save_run_config(cfg: Config, out: Path) -> None:
    text = config_to_yaml(cfg)
    location = run_location(cfg)
    if not location.is_local:  # `--resume URI` reads it back from the store
        location.join(RUN_CONFIG_FILE).write_text(text)
    else:
        out.mkdir(parents=True, exist_ok=True)
        (out / RUN_CONFIG_FILE).write_text(text)


class RunBusyError(LeaseBusyError):
    """Another training job holds the run (or took it over from this one)."""


class RunLease(Lease):
    """One training job per run: `_train/lease.json` in the run location, taken before the run's
    config is written and Ray starts, given back when the job ends (io/lease.py). Two jobs on one
    run would interleave metrics.jsonl and rotate each other's checkpoints away."""

    NAME = "_train/lease.json"
    KIND = "training"
    TARGET = "run"
    OTHERWISE = "choose another run.name"
    ERROR = RunBusyError


def run_lease(cfg: Config) -> RunLease:
    """The lease on cfg's run (use as `with run_lease(cfg):` around save_run and the training)."""
    return RunLease(run_location(cfg))


def start_run(cfg: Config) -> tuple[Config, Path]:
    """A new run: prepare_run's checks, then save_run. Returns the config with a name and
    absolute paths, and the local output directory."""
    cfg = prepare_run(cfg)
    return cfg, save_run(cfg)


def save_run(cfg: Config) -> Path:
    """Write the run's config into its location; returns the local output directory."""
    out = output_dir(cfg)
    _save_run_config(cfg, out)
    return out


def prepare_run(cfg: Config) -> Config:
    """A new run's config, checked and named, with nothing written: refuses a name whose
    location already holds checkpoints (resume it instead), unless run.resume is auto, which
    continues that run with this config."""
    cfg = absolutize(cfg)
    if not cfg.run.name:
        cfg = cfg.replace(run={"name": new_run_name()})
    location = run_location(cfg)
    if has_checkpoints(location):
        if cfg.run.resume != "auto":
            raise ConfigError(
                f"run.name: {location} already holds a run; continue it with "
                f"`simgan train --resume {location}` (or --resume-if-exists) or choose another "
                "run.name"
            )
        saved = run_config(location)
        _refuse_shape_changes(saved, cfg, location)
        changed = changed_fields(saved, cfg)
        log.info(
            "run %s holds a checkpoint: resuming it%s",
            location,
            f" (config changed: {', '.join(changed)})" if changed else "",
        )
    _check_data_exists(cfg)  # before the run directory exists: a typo leaves nothing behind
    return cfg


def changed_fields(before: Config, after: Config) -> list[str]:
    """Dotted names of the fields whose values differ between two configs."""

    def flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        items: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, dict):  # an empty mapping adds no name
                items.update(flat(value, f"{prefix}{key}."))
            else:
                items[f"{prefix}{key}"] = value
        return items

    a, b = flat(before.to_dict()), flat(after.to_dict())
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def _parameter_shapes(cfg: Config) -> dict[str, tuple[int, ...]]:
    """R's and D's parameters, by name and shape; the networks are built on the meta device,
    so this takes no memory whatever the sizes."""
    with torch.device("meta"):
        nets = {"refiner": build_refiner(cfg.model), "disc": build_discriminator(cfg.model)}
    return {
        f"{net}.{key}": tuple(value.shape)
        for net, module in nets.items()
        for key, value in module.state_dict().items()
    }


def shape_changes(before: Config, after: Config) -> list[str]:
    """The changed model.* fields that change R's or D's parameters (their names or shapes, e.g.
    model.disc_dropout adds layers), so that a checkpoint of one config cannot be loaded into the
    other: found by building both, not from a list of fields."""
    changed = [name for name in changed_fields(before, after) if name.startswith("model.")]
    shapes = _parameter_shapes(before)
    if not changed or _parameter_shapes(after) == shapes:
        return []
    new_values = after.to_dict()["model"]
    one_by_one = [
        name
        for name in changed
        if _parameter_shapes(before.replace(model={_field(name): new_values[_field(name)]}))
        != shapes
    ]
    return one_by_one or changed  # only their combination changes shapes: name them all


def _field(dotted: str) -> str:
    return dotted.split(".", 1)[1]


def _refuse_shape_changes(saved: Config, cfg: Config, location: Location) -> None:
    """Before Ray starts: a resumed run keeps its networks' layout."""
    fields = shape_changes(saved, cfg)
    if fields:
        values = saved.to_dict()["model"]
        trained = ", ".join(f"{name}={values[_field(name)]}" for name in fields)
        raise ConfigError(
            f"{', '.join(fields)}: {location} was trained with {trained}; its checkpoints hold "
            "networks of that layout, so a resume cannot change it (start a new run for "
            "another architecture)"
        )


def _check_data_exists(cfg: Config) -> None:
    """Resolve both corpora's shard lists (a listing each; the workers resolve them again)."""
    for field_name in ("synthetic", "real"):
        location = data_location(cfg, getattr(cfg.data, field_name))
        try:
            resolve_shard_urls(location, cfg.data.allow_pipe_urls)
        except (FileNotFoundError, ValueError) as err:
            raise ConfigError(f"data.{field_name}: {err}") from None


def run_config(run: Location | str | Path, overrides: list[str] | None = None) -> Config:
    """The config an existing run (local directory or URI) was started with, overrides applied;
    reads only (resume_run saves it). The location's options reach the store (they replace the
    saved run.storage_options when given, e.g. for a store that moved)."""
    location = Location.of(run).absolute()
    config_location = location.join(RUN_CONFIG_FILE)
    if not config_location.exists():
        raise ConfigError(f"{location}: not a run directory (no {RUN_CONFIG_FILE})")
    if not has_checkpoints(location):
        raise ConfigError(f"{location}: no checkpoint to resume from")
    source = config_location.url
    data = parse_yaml(config_location.read_text(), source)
    cfg = load_config(data, overrides=overrides, source=source)
    if overrides:
        _refuse_shape_changes(load_config(data, source=source), cfg, location)
    # The run keeps its name and location even if the directory was moved.
    run_fields: dict[str, Any] = {"name": location.name, "storage_path": location.parent.url}
    if location.options:
        run_fields["storage_options"] = dict(location.options)
    return cfg.replace(run=run_fields)


def resume_run(
    run: Location | str | Path, overrides: list[str] | None = None
) -> tuple[Config, Path]:
    """An existing run, with the config it was started with; overrides (e.g. a longer
    schedule.adversarial_nimg) are applied and saved with the run."""
    cfg = run_config(run, overrides)
    return cfg, save_run(cfg)
