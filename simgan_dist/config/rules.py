"""Validation declared next to each config field: `checked(default, rule)` and the rules it takes."""

from __future__ import annotations

import dataclasses
import reprlib
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from typing import Any, ClassVar

from simgan_dist.config.credentials import is_secret_name, redact_userinfo
from simgan_dist.errors import InputError


class _Shown(reprlib.Repr):
    """A refused value as a message shows it: cut short (a huge or deeply nested value must not
    cost memory to print), URL user info and credential-named keys' values masked."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxdict, self.maxlist, self.maxtuple = 2, 4, 4, 4
        self.maxstring, self.maxother = 80, 80

    def repr_str(self, x: str, level: int) -> str:
        return super().repr_str(redact_userinfo(x), level)

    def repr_int(self, x: int, level: int) -> str:
        # repr() of an int beyond 4300 digits raises; a seed of 2**64+1 still shows whole.
        if x.bit_length() > 256:
            return f"<an integer of {x.bit_length()} bits>"
        return repr(x)

    def repr_dict(self, x: dict, level: int) -> str:
        if not x:
            return "{}"
        if level <= 0:
            return "{...}"
        pieces = [
            f"{self.repr1(k, level - 1)}: "
            + ("'***'" if is_secret_name(k) else self.repr1(v, level - 1))
            for k, v in islice(x.items(), self.maxdict)
        ]
        return "{" + ", ".join(pieces + ["..."] * (len(x) > self.maxdict)) + "}"


_SHOWN = _Shown()


def shown(value: Any) -> str:
    """repr(value) for an error message: at most about 80 characters per string, a few items
    per container, no secrets."""
    return _SHOWN.repr(value)


def require(cond: bool, name: str, msg: str, value: Any) -> None:
    # Raised as ValueError(field: msg); load_config prefixes the file name.
    if not cond:
        raise InputError(f"{name}: {msg}, got {shown(value)}")


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
