"""The `simgan` command: shards, train, tune, screen, refine, export, eval, demo, bench (parser.py, commands.py)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

from simgan_dist.cli.console import configure_console
from simgan_dist.cli.parser import build_parser
from simgan_dist.config import ConfigError
from simgan_dist.errors import SimganError

__all__ = ["build_parser", "main"]


def _stop_as_on_ctrl_c(signum: int, frame: Any) -> None:
    # SIGTERM is how schedulers (Slurm, Kubernetes, systemd) stop a job: it takes Ctrl-C's way
    # out, so work is kept, Ray and its workers stop and the exit status is 130.
    raise KeyboardInterrupt


def _ray_connected() -> bool:
    """Whether this process is connected to Ray; Ray is imported only if a command did."""
    if "ray" not in sys.modules:
        return False
    from simgan_dist.train import ray_start

    return ray_start.connected()


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    configure_console(args.log_level, args.quiet, args.verbose)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _stop_as_on_ctrl_c) if in_main_thread else None
    ray_before = _ray_connected()  # a caller's Ray (e.g. a test's) is left as it is
    try:
        try:
            args.func(args)
        finally:
            if not ray_before and _ray_connected():
                # Before the last line: the Ray this command started (or joined) stops with its
                # workers and actors, not after the exit status is decided.
                from simgan_dist.train import ray_start

                ray_start.disconnect()
    except KeyboardInterrupt:
        # Work already done is kept: training resumes with --resume, refine skips done shards.
        print("simgan: interrupted", file=sys.stderr)
        sys.exit(130)
    except (SimganError, OSError) as err:
        # Only errors raised on purpose (each message names the URL, key, file or field) and a
        # store's OSError are one line; anything else is a bug and keeps its traceback.
        # SIMGAN_TRACEBACK=1 shows the traceback of these too, for a bug report.
        if os.environ.get("SIMGAN_TRACEBACK") == "1":
            raise
        label = "config error" if isinstance(err, ConfigError) else "error"
        print(f"simgan: {label}: {err}", file=sys.stderr)
        sys.exit(err.exit_code if isinstance(err, SimganError) else 1)
    finally:
        if previous is not None:  # None: not the main thread, or a handler set outside Python
            signal.signal(signal.SIGTERM, previous)
