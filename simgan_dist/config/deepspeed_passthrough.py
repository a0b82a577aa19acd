"""`engine.deepspeed`: DeepSpeed config keys merged over the config we generate from `engine:`.

It opens everything DeepSpeed offers (the monitor, the flops profiler, ZeRO offload, the comms
logger, ...) except what our own fields already decide: a key that two places could set would
make the run's real settings depend on which one wins."""

from __future__ import annotations

import copy
from typing import Any

from simgan_dist.config.rules import require

# DeepSpeed key (dotted for nested ones) -> the field of ours that sets it.
OWNED_KEYS = {
    "train_batch_size": "schedule.batch_size",
    "train_micro_batch_size_per_gpu": "schedule.batch_size (split over workers)",
    "gradient_accumulation_steps": "engine.grad_accum_steps",
    "gradient_clipping": "engine.grad_clip",
    "fp16": "engine.precision",
    "bf16": "engine.precision",
    "torch_autocast": "engine.precision",
    "optimizer": "optim (R and D get their own optimizers)",
    "scheduler": "optim.lr_schedule",
    "zero_optimization.stage": "engine.zero_stage",
}
# Sections that write files per engine: R and D each get their own job name or file.
PER_ENGINE_NAMES = {
    "tensorboard": "job_name",
    "csv_monitor": "job_name",
    "wandb": "group",
    "comet": "experiment_name",
}
PER_ENGINE_FILES = {"flops_profiler": "output_file"}


def check_deepspeed_passthrough(passthrough: dict[str, Any]) -> None:
    """Refuse the keys our fields own, naming the field to use instead."""
    for dotted, owner in OWNED_KEYS.items():
        section, _, key = dotted.partition(".")
        value = passthrough.get(section)
        present = section in passthrough
        if key:
            present = isinstance(value, dict) and key in value
            value = value[key] if isinstance(value, dict) and present else None
        require(not present, f"engine.deepspeed.{dotted}", f"is set by {owner}", value)
    for section in (*PER_ENGINE_NAMES, *PER_ENGINE_FILES, "zero_optimization"):
        value = passthrough.get(section, {})
        require(isinstance(value, dict), f"engine.deepspeed.{section}", "must be a mapping", value)


def _suffixed(path: str, engine_name: str) -> str:
    stem, dot, suffix = path.rpartition(".")
    return (
        f"{stem}-{engine_name}.{suffix}" if dot and "/" not in suffix else f"{path}-{engine_name}"
    )


def merge_deepspeed_config(
    generated: dict[str, Any], passthrough: dict[str, Any], engine_name: str
) -> dict[str, Any]:
    """generated with passthrough merged over it (nested mappings key by key); the monitors'
    job names and the profiler's file get '-<engine_name>' so R's and D's do not overwrite
    each other."""
    from simgan_dist.config.loading import merge  # loading builds on schema, which imports this

    # A copy: the suffixes below must not write into the frozen config's own mappings.
    merged = merge(generated, copy.deepcopy(passthrough))
    for section, key in PER_ENGINE_NAMES.items():
        if section in passthrough:
            merged[section][key] = f"{merged[section].get(key) or 'simgan'}-{engine_name}"
    for section, key in PER_ENGINE_FILES.items():
        if merged.get(section, {}).get(key):
            merged[section][key] = _suffixed(merged[section][key], engine_name)
    return merged
