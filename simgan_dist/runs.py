"""Run directories: unique names, absolute paths for Ray workers, the saved config, and --resume."""

from __future__ import annotations

import datetime
from pathlib import Path

from simgan_dist.config import Config, ConfigError, load_config, save_config

RUN_CONFIG_FILE = "config.yaml"


def _is_url(location: str) -> bool:
    return "://" in location or location.startswith("pipe:")


def absolutize(cfg: Config, base: Path | None = None) -> Config:
    """Ray workers do not share the driver's working directory: make local paths absolute."""
    base = base or Path.cwd()

    def fix(location: str) -> str:
        return location if _is_url(location) else str((base / location).resolve())

    return cfg.replace(
        data={"synthetic": fix(cfg.data.synthetic), "real": fix(cfg.data.real)},
        run={"storage_path": fix(cfg.run.storage_path)},
    )


def new_run_name(prefix: str = "simgan") -> str:
    return f"{prefix}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S-%f')}"


def has_checkpoints(run_dir: Path) -> bool:
    return any(run_dir.glob("checkpoint-*"))


def start_run(cfg: Config) -> tuple[Config, Path]:
    """A new run: refuses a name whose directory already holds checkpoints (resume it instead)."""
    cfg = absolutize(cfg)
    if not cfg.run.name:
        cfg = cfg.replace(run={"name": new_run_name()})
    run_dir = Path(cfg.run.storage_path) / cfg.run.name
    if has_checkpoints(run_dir):
        raise ConfigError(
            f"run.name: {run_dir} already holds a run; continue it with "
            f"`simgan train --resume {run_dir}` or choose another run.name"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / RUN_CONFIG_FILE)
    return cfg, run_dir


def resume_run(run_dir: str | Path, overrides: list[str] | None = None) -> tuple[Config, Path]:
    """An existing run, with the config it was started with; overrides (e.g. a longer
    schedule.adversarial_nimg) are applied and saved, so the run directory stays truthful."""
    run_dir = Path(run_dir).resolve()
    config_path = run_dir / RUN_CONFIG_FILE
    if not config_path.exists():
        raise ConfigError(f"{run_dir}: not a run directory (no {RUN_CONFIG_FILE})")
    if not has_checkpoints(run_dir):
        raise ConfigError(f"{run_dir}: no checkpoint to resume from")
    cfg = load_config(config_path, overrides=overrides)
    # The run keeps its name and location even if the directory was moved.
    cfg = cfg.replace(run={"name": run_dir.name, "storage_path": str(run_dir.parent)})
    if overrides:
        save_config(cfg, config_path)
    return cfg, run_dir
