"""One `simgan` command run in the test's own process, ending as a user's shell would see it."""

from __future__ import annotations

import pytest

from simgan_dist.cli import main


def run_simgan(argv: list[str], capture: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `simgan argv`; capture is capsys or capfd. A SystemExit
    whose code is a message exits with status 1 and the message on stderr, as the interpreter
    prints it."""
    message = ""
    try:
        main(argv)
        status = 0
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else 1
        message = "" if isinstance(exit_.code, int) or exit_.code is None else str(exit_.code)
    out, err = capture.readouterr()
    return status, out, err + message
