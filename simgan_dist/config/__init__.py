"""Run configuration: frozen dataclasses (schema), YAML loading (loading) and the bundled presets."""

from simgan_dist.config.loading import (
    PRESETS_DIR,
    from_dict,
    load_config,
    merge,
    parse_override,
    preset_path,
    read_yaml,
    save_config,
)
from simgan_dist.config.schema import (
    DISCRIMINATOR_CHOICES,
    PSI_CHOICES,
    Config,
    ConfigError,
    DataConfig,
    EngineConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    ScheduleConfig,
    ScoreConfig,
)

__all__ = [
    "DISCRIMINATOR_CHOICES",
    "PRESETS_DIR",
    "PSI_CHOICES",
    "Config",
    "ConfigError",
    "DataConfig",
    "EngineConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "ScheduleConfig",
    "ScoreConfig",
    "from_dict",
    "load_config",
    "merge",
    "parse_override",
    "preset_path",
    "read_yaml",
    "save_config",
]
