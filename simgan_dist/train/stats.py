"""Training statistics reported by name, from any step, and averaged over a logging interval.

Like StyleGAN's training_stats: the loop reports every R and D step's values (every micro-batch
too, with gradient accumulation) and the hooks take the interval's means once per log line, then
average them over ranks with one all-reduce (dist.mean_over_ranks). Every rank runs the same steps,
so the mean of the ranks' means is the mean over every rank's steps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from simgan_dist.errors import SimganError


class NonFiniteLossError(SimganError, ValueError):
    """A loss went NaN or infinite: every later step would be NaN too, so the run stops before
    it logs or checkpoints the broken state."""


def check_finite(means: Mapping[str, float], where: str) -> None:
    """Raise NonFiniteLossError naming the non-finite values. Call it on means averaged over
    ranks, so every rank sees the same values and stops at the same point."""
    bad = sorted(name for name, value in means.items() if not math.isfinite(value))
    if bad:
        raise NonFiniteLossError(
            f"{', '.join(bad)} became non-finite {where} "
            "(a learning rate too high for this batch size? lower optim.*_lr)"
        )


class Collector:
    """Sums and counts of named scalars since the last pop()."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.sums)

    def report(self, name: str, value: float) -> None:
        self.sums[name] = self.sums.get(name, 0.0) + float(value)
        self.counts[name] = self.counts.get(name, 0) + 1

    def report_all(self, values: Mapping[str, float]) -> None:
        for name, value in values.items():
            self.report(name, value)

    def merge(self, other: Collector) -> None:
        """Add another collector's sums and counts (e.g. one iteration's into the interval's)."""
        for name, total in other.sums.items():
            self.sums[name] = self.sums.get(name, 0.0) + total
            self.counts[name] = self.counts.get(name, 0) + other.counts[name]

    def means(self) -> dict[str, float]:
        return {name: self.sums[name] / self.counts[name] for name in self.sums}

    def pop(self) -> dict[str, float]:
        """The means of everything reported since the last pop, then start afresh."""
        means = self.means()
        self.sums, self.counts = {}, {}
        return means
