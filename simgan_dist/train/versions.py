"""The private APIs of ray and deepspeed this package reaches into, each with the versions it was
read in, and the check that runs before each access.

A private name can move or change meaning in any release. Outside its tested range an access would
fail deep in a run (an AttributeError in a worker, an ImportError at resume) or, worse, succeed and
do something else. `require(API)` runs first and stops with one line that names the access, the
installed and the tested versions, and what to do. pyproject.toml's upper bounds are these ranges
(tests/unit/test_versions.py checks that they agree, and that every private access in the package
is listed here and preceded by its check). Versions come from the installed metadata: this module
imports neither ray nor deepspeed.

Set SIMGAN_ALLOW_UNTESTED_VERSIONS=1 to try another version anyway: the check then warns once per
access instead of stopping.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import re
import warnings
from dataclasses import dataclass

from simgan_dist.errors import InputError, SimganError

OVERRIDE_ENV = "SIMGAN_ALLOW_UNTESTED_VERSIONS"


class VersionError(SimganError, RuntimeError):
    """An installed ray or deepspeed outside the range a private access was read in."""


@dataclass(frozen=True)
class PrivateAPI:
    """One private name of a dependency, where we use it and the versions it was read in."""

    distribution: str  # the installed distribution whose version decides, e.g. "ray"
    name: str  # the private name as our code spells it
    used_in: str  # our module that reaches into it
    purpose: str  # what we use it for (the cost of doing without)
    tested_from: str  # lowest tested version (inclusive), e.g. "2.60"
    tested_below: str  # first untested version (exclusive), e.g. "2.61"

    @property
    def tested(self) -> str:
        return f">={self.tested_from},<{self.tested_below}"


RAY_CLUSTER_SWITCH = PrivateAPI(
    "ray",
    "ray._private.ray_constants.ENABLE_RAY_CLUSTER",
    "simgan_dist.train.ray_start",
    "a local Ray that binds 127.0.0.1 only (Ray has no public setting for it)",
    "2.60",
    "2.61",
)
RAY_CHECKPOINT_RECORD = PrivateAPI(
    "ray",
    "ray.train.v2._internal.execution.checkpoint.checkpoint_manager._CheckpointManagerState",
    "simgan_dist.train.ray_train",
    "rewriting Ray Train's record of a run's checkpoints so a resume starts from the newest "
    "complete one",
    "2.60",
    "2.61",
)
DEEPSPEED_COMPATIBLE_OPS = PrivateAPI(
    "deepspeed",
    "deepspeed.ops.__compatible_ops__",
    "simgan_dist.train.engine",
    "skipping the JIT build of DeepSpeed's CPU shared-memory op (30-60 s) that training never calls",
    "0.19",
    "0.20",
)
DEEPSPEED_RESTORE_BIT16 = PrivateAPI(
    "deepspeed",
    "_restore_from_bit16_weights",  # a method of DeepSpeed's ZeRO stage 1/2 optimizer
    "simgan_dist.train.engine",
    "rebuilding ZeRO's fp32 partition from the loaded weights when a checkpoint is resumed",
    "0.19",
    "0.20",
)
PRIVATE_APIS = (
    RAY_CLUSTER_SWITCH,
    RAY_CHECKPOINT_RECORD,
    DEEPSPEED_COMPATIBLE_OPS,
    DEEPSPEED_RESTORE_BIT16,
)


def release(version: str) -> tuple[int, ...]:
    """The numeric release part of a version string: "2.60.0rc1" -> (2, 60, 0)."""
    found = re.match(r"\d+(\.\d+)*", version.strip())
    if not found:
        raise InputError(f"not a version: {version!r}")
    return tuple(int(part) for part in found.group(0).split("."))


def in_range(version: str, tested_from: str, tested_below: str) -> bool:
    """tested_from <= version < tested_below, by release numbers ("2.60.0" is in 2.60..2.61)."""
    v = release(version)
    return release(tested_from) <= v < release(tested_below)


@functools.cache
def installed(distribution: str) -> str:
    return importlib.metadata.version(distribution)


def untested_message(api: PrivateAPI, version: str) -> str:
    return (
        f"{api.distribution} {version} is installed, but {api.used_in} uses its private "
        f"{api.name} ({api.purpose}), read only in {api.distribution}{api.tested}; install a "
        f"tested version (requirements-cluster.txt pins them), or set {OVERRIDE_ENV}=1 to try "
        f"this one anyway"
    )


@functools.cache
def _warn_once(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def require(api: PrivateAPI) -> None:
    """Stop with a clear RuntimeError unless the installed version is in api's tested range
    (a warning instead with SIMGAN_ALLOW_UNTESTED_VERSIONS=1). Call it before the access."""
    version = installed(api.distribution)
    if in_range(version, api.tested_from, api.tested_below):
        return
    message = untested_message(api, version)
    if os.environ.get(OVERRIDE_ENV, "") not in ("", "0"):
        _warn_once(message)
        return
    raise VersionError(message)
