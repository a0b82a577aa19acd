"""The `simgan` command: shards, train, tune, screen, refine, export, eval, demo, bench (parser.py, commands.py)."""

from __future__ import annotations

import os
import sys

from simgan_dist.cli.console import configure_console
from simgan_dist.cli.parser import build_parser
from simgan_dist.config import ConfigError

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    configure_console(args.log_level, args.quiet, args.verbose)
    try:
        args.func(args)
    except KeyboardInterrupt:
        # Work already done is kept: training resumes with --resume, refine skips done shards.
        print("simgan: interrupted", file=sys.stderr)
        sys.exit(130)
    except ConfigError as err:
        print(f"simgan: config error: {err}", file=sys.stderr)
        sys.exit(2)
    except (OSError, ValueError) as err:
        # Unreachable stores, missing shards, refused URLs, bad samples with on_bad_sample=stop,
        # unreadable checkpoints: each message names the URL, key, file or field. SIMGAN_TRACEBACK=1
        # shows the traceback instead, for a bug report.
        if os.environ.get("SIMGAN_TRACEBACK") == "1":
            raise
        print(f"simgan: error: {err}", file=sys.stderr)
        sys.exit(1)
