"""Search files for `simgan tune`: the space (choice, uniform, loguniform, grid) and Tune settings."""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from simgan_dist.config import Config, ConfigError, build_dataclass, read_yaml, require
from simgan_dist.config.rules import Section, above, at_least, checked
from simgan_dist.config.schema import ONE_PATH_COMPONENT
from simgan_dist.config.trackers import TuneMLflow, TuneWandb
from simgan_dist.errors import InputError
from simgan_dist.tune.trackers import SearcherName, check_searcher

SEARCHES_DIR = Path(__file__).parent / "searches"
DOMAIN_KINDS = ("choice", "grid", "uniform", "loguniform")
# Tune owns where each trial's training run goes and what it is called.
MANAGED_FIELDS = ("run.name", "run.storage_path")


@dataclass(frozen=True)
class SearchSettings(Section):
    """The `tune:` section of a search file."""

    SECTION: ClassVar[str] = "tune"
    # experiment name, one path component under the storage path (empty: tune-<timestamp>)
    name: str = checked("", ONE_PATH_COMPONENT)
    storage_path: str = ""  # where the experiment goes (empty: the base config's run.storage_path)
    # trials drawn from the space (each grid point counts num_samples times)
    num_samples: int = checked(4, at_least(1))
    # 0: as many as the cluster's CPUs/GPUs hold at once
    max_concurrent_trials: int = checked(0, at_least(0))
    scheduler: Literal["asha", "none"] = "asha"
    # ASHA, with time counted in images (cur_nimg) like training. 0: pretraining plus one
    # score interval, so no trial is judged before it has seen the adversarial phase.
    grace_period_nimg: int = checked(0, at_least(0))
    reduction_factor: float = checked(2.0, above(1))
    seed: int = 0  # seeds the searcher (the trials' own seed is run.seed)
    # random: Tune's BasicVariantGenerator (random draws and grids); optuna: Optuna's TPE,
    # which picks each trial from the results so far (`pip install 'simgan-dist[optuna]'`).
    searcher: SearcherName = "random"
    wandb: TuneWandb = field(default_factory=TuneWandb)
    mlflow: TuneMLflow = field(default_factory=TuneMLflow)


@dataclass(frozen=True)
class Domain:
    """One searched field: kind is choice, grid, uniform or loguniform; a fixed value has kind
    "fixed" and one value. Bounds of uniform/loguniform are inclusive; on an integer field they
    sample integers."""

    kind: str
    values: tuple[Any, ...]
    integer: bool = False


@dataclass(frozen=True)
class Search:
    space: dict[str, Domain]
    settings: SearchSettings = field(default_factory=SearchSettings)
    source: str = "<search>"

    def searched(self) -> list[str]:
        """The fields that vary between trials, in file order."""
        return [name for name, domain in self.space.items() if domain.kind != "fixed"]

    def num_trials(self) -> int:
        """Trials of the whole search: num_samples draws for each point of the grid."""
        grid = math.prod(len(d.values) for d in self.space.values() if d.kind == "grid")
        return self.settings.num_samples * grid

    def to_yaml(self) -> str:
        space = {
            name: d.values[0] if d.kind == "fixed" else {d.kind: list(d.values)}
            for name, d in self.space.items()
        }
        return yaml.safe_dump(
            {"space": space, "tune": dataclasses.asdict(self.settings)}, sort_keys=False
        )


def field_type(name: str) -> Any:
    """The type hint of a dotted config field, e.g. 'schedule.k_g' -> int."""
    section, _, key = name.partition(".")
    sections = typing.get_type_hints(Config)
    if section not in sections or not key:
        raise InputError(f"unknown config field (known sections: {', '.join(sections)})")
    hints = typing.get_type_hints(sections[section])
    if key not in hints:
        raise InputError(f"unknown config field (known in {section}: {', '.join(hints)})")
    return hints[key]


def apply_params(cfg: Config, params: dict[str, Any]) -> Config:
    """cfg with each dotted field of params set: {'loss.reg_lambda': 0.1} -> loss.reg_lambda."""
    sections: dict[str, dict[str, Any]] = {}
    for name, value in params.items():
        section, _, key = name.partition(".")
        sections.setdefault(section, {})[key] = value
    return cfg.replace(**sections)


def _parse_domain(name: str, spec: Any) -> Domain:
    if not isinstance(spec, dict):
        return Domain("fixed", (spec,))
    require(
        len(spec) == 1 and next(iter(spec)) in DOMAIN_KINDS,
        name,
        f"must be a value or a mapping with one key of {list(DOMAIN_KINDS)}",
        spec,
    )
    kind, values = next(iter(spec.items()))
    require(isinstance(values, list) and len(values) >= 1, name, f"{kind}: needs a list", values)
    integer = field_type(name) is int
    if kind in ("uniform", "loguniform"):
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        require(numbers and len(values) == 2, name, f"{kind}: needs [low, high]", values)
        require(values[0] < values[1], name, f"{kind}: low must be < high", values)
        require(kind == "uniform" or values[0] > 0, name, "loguniform: low must be > 0", values)
        if integer:
            require(
                all(float(v).is_integer() for v in values),
                name,
                f"{kind}: an integer field needs integer bounds",
                values,
            )
            values = [int(v) for v in values]
    return Domain(kind, tuple(values), integer)


def _check_values(name: str, domain: Domain, base: Config) -> None:
    """Every categorical value and both bounds must make a valid config on their own."""
    for value in domain.values:
        try:
            apply_params(base, {name: value})
        except ConfigError as err:
            # ConfigError reads "<replace>: field: message"; keep the field and message.
            detail = str(err).split(": ", 1)[-1]
            raise InputError(f"{name}: value {value!r} gives an invalid config: {detail}") from None


def _space_field(name: str, check: Any) -> Any:
    """Run check() for space.<name>; its error comes out prefixed with that field."""
    try:
        field_type(name)
        return check()
    except ValueError as err:
        message = str(err) if str(err).startswith(name) else f"{name}: {err}"
        raise InputError(f"space.{message}") from None


def parse_search(data: dict[str, Any], base: Config, source: str = "<search>") -> Search:
    """Validate a search mapping against the base config; problems name the file and field."""
    try:
        unknown = set(data) - {"space", "tune"}
        require(not unknown, "search", "known sections are space and tune", sorted(unknown))
        raw_space = data.get("space") or {}
        require(isinstance(raw_space, dict) and bool(raw_space), "space", "needs fields", raw_space)
        space = {}
        for name, spec in raw_space.items():
            require(name not in MANAGED_FIELDS, f"space.{name}", "is set per trial", spec)
            space[name] = _space_field(name, functools.partial(_parse_domain, name, spec))
        fixed = {n: d.values[0] for n, d in space.items() if d.kind == "fixed"}
        try:
            base = apply_params(base, fixed)
        except ConfigError as err:
            raise InputError(f"space: fixed values: {str(err).split(': ', 1)[-1]}") from None
        for name, domain in space.items():
            if domain.kind != "fixed":
                _space_field(name, functools.partial(_check_values, name, domain, base))
        settings = build_dataclass(SearchSettings, data.get("tune") or {}, "tune.")
        check_searcher(settings.searcher, [n for n, d in space.items() if d.kind == "grid"])
    except ValueError as err:
        raise ConfigError(f"{source}: {err}") from None
    return Search(space, settings, source)


def search_path(name_or_path: str | Path) -> Path:
    """A search file, or the name of a bundled one (simgan_dist/searches/NAME.yaml)."""
    path = Path(name_or_path)
    bundled = SEARCHES_DIR / f"{name_or_path}.yaml"
    if not path.exists() and bundled.exists():
        return bundled
    return path


def load_search(path: str | Path, base: Config) -> Search:
    path = search_path(path)
    return parse_search(read_yaml(path), base, str(path))


def fixed_params(search: Search) -> dict[str, Any]:
    return {name: d.values[0] for name, d in search.space.items() if d.kind == "fixed"}


def param_space(search: Search) -> dict[str, Any]:
    """The Tune param_space: one Tune domain per searched field (fixed fields are applied to the
    base config instead, so they show in every trial's config but not as searched columns)."""
    from ray import tune

    def domain(d: Domain) -> Any:
        if d.kind == "choice":
            return tune.choice(list(d.values))
        if d.kind == "grid":
            return tune.grid_search(list(d.values))
        low, high = d.values
        if d.integer:  # Tune's integer domains exclude the upper bound
            return (tune.randint if d.kind == "uniform" else tune.lograndint)(low, high + 1)
        return (tune.uniform if d.kind == "uniform" else tune.loguniform)(low, high)

    return {name: domain(d) for name, d in search.space.items() if d.kind != "fixed"}
