"""Progress bars for long work (shard building, verifying, eval, refine): tqdm on stderr.

On a terminal a bar redraws each second; in a redirected log it writes a plain line at most
every 30 s, and nothing for work done within 2 s, so a log stays short and a quick failure is
its one error line. SIMGAN_PROGRESS=0 (`simgan --quiet`) turns
every bar off; it is an environment variable so Ray workers and child processes see it too."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

PROGRESS_ENV = "SIMGAN_PROGRESS"
LOG_INTERVAL_S = 30  # between lines when stderr is not a terminal
LOG_DELAY_S = 2.0  # no line at all in a redirected log for work shorter than this

T = TypeVar("T")


def progress_enabled() -> bool:
    return os.environ.get(PROGRESS_ENV, "1") != "0"


class _LogLines:
    """stderr as a bar sees it in a redirected log: each redraw becomes a line of its own,
    instead of carriage-return redraws that a log viewer shows as one garbled line."""

    def write(self, text: str) -> None:
        text = text.replace("\r", "").rstrip("\n")
        if text.strip():
            sys.stderr.write(text + "\n")

    def flush(self) -> None:
        sys.stderr.flush()


def progress_bar(total: int | None, desc: str, unit: str = "img", enabled: bool = True) -> tqdm:
    """A bar of `total` units (None: a counter without ETA), off with enabled=False or
    SIMGAN_PROGRESS=0. Update it with bar.update(n); use it as a context manager."""
    on_terminal = sys.stderr.isatty()
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        disable=not (enabled and progress_enabled()),
        file=sys.stderr if on_terminal else _LogLines(),
        mininterval=1 if on_terminal else LOG_INTERVAL_S,
        delay=0 if on_terminal else LOG_DELAY_S,
        dynamic_ncols=on_terminal,
        ascii=not on_terminal,  # a log file gets '#' bars, not block characters
    )


def with_progress(
    items: Iterable[T], total: int | None, desc: str, unit: str = "img"
) -> Iterator[T]:
    """items, ticking a bar once per item; the bar closes when the iteration ends."""
    with progress_bar(total, desc, unit) as bar:
        for item in items:
            yield item
            bar.update(1)


def progress_line(text: str) -> None:
    """A line to stderr that a running bar redraws below, instead of being torn by it."""
    tqdm.write(text, file=sys.stderr)
