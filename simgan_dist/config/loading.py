"""Config loading: YAML presets and files, --set overrides and dicts, validated into a Config."""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

from simgan_dist.config.credentials import check_no_userinfo
from simgan_dist.config.rules import shown
from simgan_dist.config.schema import Config, ConfigError, require
from simgan_dist.config.yaml_input import (
    ConfigInputError,
    load_yaml,
    read_config_bytes,
    shape_problem,
)
from simgan_dist.errors import InputError

PRESETS_DIR = Path(__file__).parent / "presets"

log = logging.getLogger(__name__)


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """Check one YAML value against a dataclass field's type; ints are accepted for floats."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        require(value in choices, name, f"must be one of {list(choices)}", value)
        return value
    if origin is tuple:
        args = typing.get_args(hint)
        require(
            isinstance(value, (list, tuple)) and len(value) == len(args),
            name,
            f"must be a list of {len(args)}",
            value,
        )
        return tuple(_coerce(v, a, name) for v, a in zip(value, args, strict=True))
    if origin is dict:
        require(
            isinstance(value, dict) and all(isinstance(k, str) for k in value),
            name,
            "must be a mapping with string keys",
            value,
        )
        check_no_userinfo(value, name)
        return dict(value)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            try:
                return _coerce(value, arg, name)
            except ValueError:
                continue
        raise InputError(f"{name}: wrong type, got {shown(value)}")
    if hint is float:
        require(
            isinstance(value, (int, float)) and not isinstance(value, bool),
            name,
            "must be a number",
            value,
        )
        # YAML reads .inf and .nan as floats; no setting of ours means anything with them.
        require(math.isfinite(value), name, "must be a finite number", value)
        return float(value)
    if hint is int:
        require(
            isinstance(value, int) and not isinstance(value, bool),
            name,
            "must be an integer",
            value,
        )
        return value
    if hint is bool:
        require(isinstance(value, bool), name, "must be true or false", value)
        return value
    if hint is str:
        require(isinstance(value, str), name, "must be a string", value)
        # Locations and endpoints: a user:password@ would reach config.yaml and log lines.
        check_no_userinfo(value, name)
        return value
    raise TypeError(f"{name}: unsupported config type {hint!r}")


def _short(name: Any) -> str:
    # A key or dotted field as a message names it: a huge one is cut.
    text = str(name)
    return text if len(text) <= 80 else text[:77] + "..."


def build_dataclass(cls: type, data: Any, prefix: str) -> Any:
    """A (nested) dataclass from a mapping, each value checked against its field's type; a
    problem raises ValueError naming the dotted field (prefix + key)."""
    if not isinstance(data, dict):
        raise InputError(f"{prefix or 'config'}: must be a mapping, got {shown(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise InputError(f"{prefix}{_short(key)}: unknown key (known: {', '.join(fields)})")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            kwargs[key] = build_dataclass(hint, value, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, hint, f"{prefix}{key}")
    return cls(**kwargs)


# The sections whose locations take fsspec storage options: shards, and runs with checkpoints.
STORAGE_SECTIONS = ("data", "run")


def spread_storage_options(data: dict[str, Any]) -> dict[str, Any]:
    """A top-level `storage_options:` (one endpoint for the whole config) copied into each
    storage section; a section's own keys win."""
    if "storage_options" not in data:
        return data
    data = dict(data)
    shared = data.pop("storage_options")
    require(isinstance(shared, dict), "storage_options", "must be a mapping", shared)
    for section in STORAGE_SECTIONS:
        own = data.get(section) or {}
        require(isinstance(own, dict), section, "must be a mapping", own)
        data[section] = {**own, "storage_options": merge(shared, own.get("storage_options") or {})}
    return data


def _check_shape(data: Any, source: str) -> None:
    problem = shape_problem(data)
    if problem:
        raise ConfigError(f"{source}: {problem}")


# Renamed fields: (section, old name) -> new name. The old name is read for one release, with a
# deprecation line; a config giving both is refused.
RENAMED_FIELDS = {("data", "shuffle_buffer"): "shuffle_window"}
# Removed fields: (section, name) -> what to do instead. A config giving one is refused naming it.
REMOVED_FIELDS = {
    ("data", "rank_split"): "each rank always reads its own shards; drop the field",
    ("optim", "disc_optimizer"): "R and D both use optim.optimizer; drop the field",
}


def rename_deprecated(data: dict[str, Any], source: str) -> dict[str, Any]:
    """data with each renamed field under its new name (a copy when anything changed)."""
    for (section, name), instead in REMOVED_FIELDS.items():
        values = data.get(section)
        if isinstance(values, dict) and name in values:
            raise InputError(f"{section}.{name}: removed in this release: {instead}")
    for (section, old), new in RENAMED_FIELDS.items():
        values = data.get(section)
        if not isinstance(values, dict) or old not in values:
            continue
        require(
            new not in values, f"{section}.{old}", f"is {section}.{new}'s old name: give one", old
        )
        log.warning(
            "%s: %s.%s is deprecated, read as %s.%s (its new name)",
            source,
            section,
            old,
            section,
            new,
        )
        values = {new if k == old else k: v for k, v in values.items()}
        data = {**data, section: values}
    return data


def from_dict(data: dict[str, Any], source: str = "<dict>") -> Config:
    """Validate a nested dict into a Config; any problem is one ConfigError line naming source."""
    _check_shape(data, source)
    try:
        return build_dataclass(Config, spread_storage_options(rename_deprecated(data, source)), "")
    except ValueError as err:
        raise ConfigError(f"{source}: {err}") from None


def preset_path(name: str) -> Path:
    # Looked up among the bundled names, not as a path: `--preset ../../x` reads no other file.
    known = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
    if name not in known:
        raise ConfigError(f"unknown preset {shown(name)} (known: {', '.join(known)})")
    return PRESETS_DIR / f"{name}.yaml"


def parse_yaml(text: str, source: str = "<string>") -> dict[str, Any]:
    """A YAML mapping from text; problems are one ConfigError line naming source."""
    try:
        data = load_yaml(text) or {}
    except ConfigInputError as err:
        raise ConfigError(f"{source}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping")
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A config file's mapping: a regular UTF-8 file of a sane size (yaml_input), else one
    ConfigError line naming the file."""
    try:
        text = read_config_bytes(path).decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
    except ValueError as err:  # a FIFO, a device, a directory, or too large
        raise ConfigError(f"{path}: {err}") from None
    return parse_yaml(text, str(path))


ConfigSource = str | Path | Mapping[str, Any]


def _is_yaml_text(text: str) -> bool:
    """A str is YAML text (not a path) when it spans lines, or is no file and reads as a mapping."""
    if "\n" in text:
        return True
    try:
        if Path(text).exists():
            return False
    except OSError:  # a name too long to be a path
        pass
    try:
        return isinstance(load_yaml(text), dict)
    except ConfigInputError:
        return True  # refused YAML: parse_yaml says why
    except yaml.YAMLError:
        return False


def _read_source(config: ConfigSource, source: str | None) -> tuple[dict[str, Any], str]:
    if isinstance(config, Mapping):
        _check_shape(config, source or "<dict>")  # before a deep copy recurses through it
        return copy.deepcopy(dict(config)), source or "<dict>"
    if isinstance(config, str) and _is_yaml_text(config):
        name = source or "<string>"
        return parse_yaml(config, name), name
    return read_yaml(config), source or str(config)


def parse_override(text: str) -> dict[str, Any]:
    """'schedule.batch_size=64' -> {'schedule': {'batch_size': 64}} (value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"--set {shown(text)}: expected section.field=value")
    dotted, raw = text.split("=", 1)
    try:
        value: Any = load_yaml(raw)
    except ConfigInputError as err:
        raise ConfigError(f"--set {_short(dotted)}: {err}") from None
    except yaml.YAMLError as err:
        reason = str(err).splitlines()[0]
        raise ConfigError(
            f"--set {_short(dotted)}: the value is not valid YAML ({reason})"
        ) from None
    for part in reversed(dotted.split(".")):
        value = {part: value}
    _check_shape(value, f"--set {_short(dotted)}")
    return value


def load_config(
    config: ConfigSource | None = None,
    preset: str | None = None,
    overrides: list[str] | None = None,
    source: str | None = None,
) -> Config:
    """Preset (or the config's `preset:` key) first, then the config, then --set overrides,
    validated. config is a YAML file's path, YAML text or a dict; source names it in errors
    (default: the path, "<string>" or "<dict>")."""
    data: dict[str, Any] = {}
    name = "<defaults>"
    file_data: dict[str, Any] = {}
    config_name = ""
    given = isinstance(config, Mapping) or bool(config)
    if config is not None and given:
        file_data, config_name = _read_source(config, source)
    preset = file_data.pop("preset", None) or preset
    if preset:
        data = read_yaml(preset_path(preset))
        name = str(preset_path(preset))
    if given:
        data = merge(data, file_data)
        name = config_name
    for text in overrides or []:
        data = merge(data, parse_override(text))
    if overrides:
        # Field names only: a value may be a secret that the refusal must not print.
        name += " (with --set " + " ".join(_short(t.split("=", 1)[0]) for t in overrides) + ")"
    return from_dict(data, name)


def config_to_yaml(cfg: Config) -> str:
    """The resolved config as YAML text, which load_config reads back to an equal Config."""
    data = cfg.to_dict()
    data["optim"]["adam_betas"] = list(cfg.optim.adam_betas)
    return yaml.safe_dump(data, sort_keys=False)


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(config_to_yaml(cfg))
