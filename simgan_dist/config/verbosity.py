"""Whether Ray's and DeepSpeed's own INFO/WARNING lines are shown: SIMGAN_VERBOSE=1 (`simgan --verbose`).

An environment variable so the Ray workers a local instance starts inherit it (set before
Ray starts); on a cluster, pass it in the job's runtime_env to see the workers' lines."""

from __future__ import annotations

import os

VERBOSE_ENV = "SIMGAN_VERBOSE"


def third_party_verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1"
