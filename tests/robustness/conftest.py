"""The robustness suite's tally of how its cases ended, kept with or without pytest's cache plugin."""

from __future__ import annotations

import collections

import pytest

_OUTCOMES = pytest.StashKey[collections.Counter]()
CACHE_KEY = "robustness/outcomes"  # `pytest --cache-show 'robustness/*'` shows the last run's


def _tally(config: pytest.Config) -> collections.Counter:
    return config.stash.setdefault(_OUTCOMES, collections.Counter())


@pytest.fixture(scope="session")
def outcomes(request: pytest.FixtureRequest) -> collections.Counter:
    """Counts by outcome ("verify: damaged shard reported, exit 1": 12, ...) over the session."""
    return _tally(request.config)


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    tally = _tally(config)
    if tally:
        terminalreporter.write_sep("-", "robustness outcomes")
        for outcome, count in sorted(tally.items()):
            terminalreporter.write_line(f"{count:6d}  {outcome}")


def pytest_sessionfinish(session: pytest.Session) -> None:
    # The cache plugin may be off (-p no:cacheprovider): then the summary above is the record.
    cache = getattr(session.config, "cache", None)
    tally = _tally(session.config)
    if cache is not None and tally:
        cache.set(CACHE_KEY, dict(sorted(tally.items())))
