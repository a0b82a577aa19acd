"""Validation declared next to each field: rules name section.field, and sections know their name."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import ClassVar

import pytest

from simgan_dist.config import Config, ConfigError, load_config
from simgan_dist.config.rules import Section, above, at_least, checked, in_range, one_of
from simgan_dist.tune.space import SearchSettings


@dataclass(frozen=True)
class Toy(Section):
    SECTION: ClassVar[str] = "toy"
    count: int = checked(1, at_least(1))
    share: float = checked(0.5, in_range(0, 1))
    stage: int = checked(0, one_of(0, 1, 2))
    low: int = 0
    high: int = checked(1, above(0))

    def check(self) -> None:
        if self.low >= self.high:
            raise ValueError(f"toy.low: must be < toy.high, got {self.low!r}")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"count": 0}, "toy.count: must be >= 1, got 0"),
        ({"share": 1.0}, "toy.share: must be in [0, 1), got 1.0"),
        ({"stage": 3}, "toy.stage: must be 0, 1 or 2, got 3"),
        ({"high": 0}, "toy.high: must be > 0, got 0"),
        ({"low": 5, "high": 2}, "toy.low: must be < toy.high, got 5"),
    ],
)
def test_a_declared_rule_names_its_section_and_field(kwargs, message) -> None:
    with pytest.raises(ValueError) as err:
        Toy(**kwargs)
    assert str(err.value) == message


def test_every_config_section_is_named_as_config_holds_it() -> None:
    hints = typing.get_type_hints(Config)
    for field in dataclasses.fields(Config):
        section = hints[field.name]
        assert issubclass(section, Section) and section.SECTION == field.name, field.name
    assert SearchSettings.SECTION == "tune"


def test_a_rule_error_through_load_config_names_the_file(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("preset: debug\noptim:\n  momentum: 1.5\n")
    with pytest.raises(
        ConfigError, match=r"bad.yaml: optim.momentum: must be in \[0, 1\), got 1.5"
    ):
        load_config(path)
