"""Config YAML read as untrusted input: regular files of a sane size, no aliases, bounded nesting.

A config comes from a file, a `--set` or a `--storage-option`, each typed by whoever runs the
command. Three shapes of input would otherwise hang or exhaust the process before any field is
checked: a FIFO or device as the file (`open()` waits for a writer, `/dev/zero` never ends), YAML
aliases (a few lines that expand to 10^10 nodes, the "billion laughs"), and deep nesting (the
composer recurses once per level). Each is refused in one line naming the file or option.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from simgan_dist.errors import InputError

# A config is a few kilobytes (the presets are under 2 KiB); a MiB leaves room for long comments.
MAX_CONFIG_BYTES = 1 << 20
# Deepest legitimate nesting: section.storage_options.config_kwargs.retries.max_attempts is 5.
MAX_DEPTH = 32
# Values in one config (a preset holds about 60): bounds any walk over a mapping built in Python.
MAX_VALUES = 100_000

_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a directory",
    stat.S_IFSOCK: "a socket",
}


class ConfigInputError(yaml.YAMLError):
    """YAML that is well-formed but refused as a config: an alias, or nesting beyond MAX_DEPTH.
    A YAMLError, so every caller that reports bad YAML in one line reports this the same way."""


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases (so no value is shared or expanded) and counts depth."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            line = self.peek_event().start_mark.line + 1
            raise ConfigInputError(
                f"line {line}: YAML aliases (*name) are not accepted in a config: write the value "
                "out where it is used"
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                line = self.peek_event().start_mark.line + 1
                raise ConfigInputError(f"line {line}: nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml(text: str) -> Any:
    """The value of one YAML document, safely: no Python tags, no aliases, at most MAX_DEPTH
    levels. Raises yaml.YAMLError (ConfigInputError for a refusal)."""
    loader = _ConfigLoader(text)
    try:
        return loader.get_single_data()
    except ValueError as err:
        # A constructor's own error: an integer of more than 4300 digits, a date like 2020-13-45.
        raise ConfigInputError(f"cannot read a value: {str(err).split(';')[0]}") from None
    finally:
        loader.dispose()


def _kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def read_config_bytes(path: str | Path) -> bytes:
    """The bytes of a config file: a regular file (after symlinks) of at most MAX_CONFIG_BYTES.
    Raises OSError (FileNotFoundError when missing) or ValueError naming the problem, never
    blocks: the file is stat'ed before it is opened, and opened without waiting for a writer."""
    info = os.stat(path)  # follows symlinks: a link to /dev/zero is a character device
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"is {_kind(info.st_mode)}, not a regular file")
    # O_NONBLOCK: if the path was swapped for a FIFO since the stat, open() still returns.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"is {_kind(info.st_mode)}, not a regular file")
        data = f.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise InputError(f"larger than {MAX_CONFIG_BYTES} bytes: not a config")
    return data


def shape_problem(data: Any) -> str | None:
    """What makes a mapping built in Python unfit to be a config (nested deeper than MAX_DEPTH,
    or more than MAX_VALUES values, shared or cyclic parts included), or None. Iterative."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    seen = 0
    while stack:
        value, path, depth = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            return f"more than {MAX_VALUES} values: not a config"
        if depth > MAX_DEPTH:
            shown = ".".join(path.split(".")[:4])
            return f"{shown}...: nested deeper than {MAX_DEPTH} levels"
        if isinstance(value, dict):
            stack.extend(
                (inner, f"{path}.{str(key)[:40]}" if path else str(key)[:40], depth + 1)
                for key, inner in value.items()
            )
        elif isinstance(value, (list, tuple)):
            stack.extend((inner, f"{path}.{i}", depth + 1) for i, inner in enumerate(value))
    return None
