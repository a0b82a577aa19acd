"""Validation declared next to each config field: `checked(default, rule)` and the rules it takes."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar


def require(cond: bool, name: str, msg: str, value: Any) -> None:
    # Raised as ValueError(field: msg); load_config prefixes the file name.
    if not cond:
        raise ValueError(f"{name}: {msg}, got {value!r}")


@dataclass(frozen=True)
class Rule:
    """A test a field's value must pass, and what the error says when it does not."""

    test: Callable[[Any], bool]
    message: str


def at_least(bound: float) -> Rule:
    return Rule(lambda v: v >= bound, f"must be >= {bound}")


def above(bound: float) -> Rule:
    return Rule(lambda v: v > bound, f"must be > {bound}")


def in_range(lo: float, hi: float, *, closed: bool = False) -> Rule:
    """lo <= v < hi, or lo <= v <= hi when closed."""
    if closed:
        return Rule(lambda v: lo <= v <= hi, f"must be in [{lo}, {hi}]")
    return Rule(lambda v: lo <= v < hi, f"must be in [{lo}, {hi})")


def one_of(*choices: Any) -> Rule:
    words = ", ".join(str(c) for c in choices[:-1]) + f" or {choices[-1]}"
    return Rule(lambda v: v in choices, f"must be {words}")


NOT_EMPTY = Rule(bool, "must be set")


def checked(default: Any = dataclasses.MISSING, rule: Rule | None = None, **kwargs: Any) -> Any:
    """A dataclass field whose value must pass `rule` when its section is built (Section)."""
    return dataclasses.field(default=default, metadata={"rule": rule}, **kwargs)


class Section:
    """Base of a frozen config section: each field's declared rule is applied when the section is
    built, the error naming `SECTION.field`; check() adds rules that involve several fields."""

    SECTION: ClassVar[str]

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):  # type: ignore[arg-type]  # subclasses are dataclasses
            rule = field.metadata.get("rule")
            if rule is not None:
                value = getattr(self, field.name)
                require(rule.test(value), f"{self.SECTION}.{field.name}", rule.message, value)
        self.check()

    def check(self) -> None:
        """Rules over several fields; each error names the field it is about."""
