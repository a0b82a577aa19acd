"""SimganError: the base of every error simgan-dist raises on purpose, with its exit status.

`simgan` (cli.main) prints such an error as one line and exits with its exit_code; it does the
same for a store's OSError (an unreachable endpoint, a missing file). Anything else is a bug and
prints its traceback. InputError is the common case (a value, file, URL or sample that is
refused) and stays a ValueError, so code that catches ValueError around a check keeps working.
"""

from __future__ import annotations


class SimganError(Exception):
    """An error raised on purpose, its message naming the file, URL, key or field."""

    exit_code = 1


class InputError(SimganError, ValueError):
    """A value, file, URL, checkpoint or sample the project refuses."""


def kind(err: BaseException) -> str:
    """The name a one-line message gives an error: its class's, except that the generic
    InputError reads as the ValueError it is (as the messages did before it existed)."""
    return "ValueError" if type(err) is InputError else type(err).__name__
