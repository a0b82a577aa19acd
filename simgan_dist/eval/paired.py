"""Seed statistics of the S+U protocol: means with 95% t-intervals, paired differences, gap closed."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from scipy import stats

from simgan_dist.errors import InputError

CONFIDENCE = 0.95


def _half_width(values: Sequence[float], confidence: float) -> float:
    """Half-width of the Student-t interval of the mean (n - 1 degrees of freedom)."""
    n = len(values)
    if n < 2:
        raise InputError(f"a confidence interval needs at least 2 values, got {n}")
    t = float(stats.t.ppf(0.5 + confidence / 2, n - 1))
    return t * statistics.stdev(values) / math.sqrt(n)


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> dict[str, float]:
    """{"mean", "low", "high", "std"} of values (one per seed)."""
    mean, half = statistics.mean(values), _half_width(values, confidence)
    return {"mean": mean, "low": mean - half, "high": mean + half, "std": statistics.stdev(values)}


@dataclass(frozen=True)
class PairedDifference:
    """second - first, seed by seed. Seed i of both arms starts from the same weights and draws
    the same batch order, so what a seed's luck adds to both cancels in the difference."""

    per_seed: tuple[float, ...]
    mean: float
    low: float
    high: float
    std: float

    @property
    def num_seeds(self) -> int:
        return len(self.per_seed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "per_seed": list(self.per_seed),
            "mean": self.mean,
            "low": self.low,
            "high": self.high,
            "std": self.std,
            "num_seeds": self.num_seeds,
        }


def paired_difference(
    first: Sequence[float], second: Sequence[float], confidence: float = CONFIDENCE
) -> PairedDifference:
    if len(first) != len(second):
        raise InputError(f"paired arms differ in seeds: {len(first)} vs {len(second)}")
    diffs = tuple(b - a for a, b in zip(first, second, strict=True))
    interval = mean_interval(diffs, confidence)
    return PairedDifference(
        diffs, interval["mean"], interval["low"], interval["high"], interval["std"]
    )


def gap_closed(
    synthetic: float, refined: float, oracle: float, difference: PairedDifference
) -> dict[str, float] | None:
    """(refined - synthetic) / (oracle - synthetic), with the paired interval scaled by the same
    gap (the oracle's own spread is left out: it is a reference, not a measurement). None when
    the oracle is no better than synthetic, where the ratio means nothing."""
    gap = oracle - synthetic
    if gap <= 0:
        return None
    return {
        "mean": (refined - synthetic) / gap,
        "low": difference.low / gap,
        "high": difference.high / gap,
        "gap_points": 100 * gap,
    }
