"""The console a person reads: one handler for every simgan_dist logger, library noise off by default."""

from __future__ import annotations

import logging
import os
import sys

from simgan_dist.config.verbosity import VERBOSE_ENV
from simgan_dist.io.progress import PROGRESS_ENV

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def configure_console(log_level: str = "INFO", quiet: bool = False, verbose: bool = False) -> None:
    """Our loggers (simgan_dist.*) to stderr through one handler at log_level (WARNING with
    quiet); Ray's and DeepSpeed's own INFO/WARNING lines only with verbose; no colour codes from
    Ray's worker-line prefixes when stdout is not a terminal (a redirected log stays plain text)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("simgan %(levelname)s %(name)s: %(message)s"))
    package = logging.getLogger("simgan_dist")
    package.handlers[:] = [handler]  # replaced, not added to, when main() runs again in-process
    package.setLevel(logging.WARNING if quiet else getattr(logging, log_level))
    os.environ[VERBOSE_ENV] = "1" if verbose else "0"
    if quiet:  # no progress bars either (SIMGAN_PROGRESS=0 set by the user also holds)
        os.environ[PROGRESS_ENV] = "0"
    if not sys.stdout.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
