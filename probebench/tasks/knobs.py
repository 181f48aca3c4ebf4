"""Knobs with declared domains: every constant a probe exposes has its default and the values it can take,
side by side, so a value outside them is one line naming the knob and its domain before any work starts.

    "temperature": Float(0.07, gt=0),                   # a number > 0 (finite)
    "ks": List(Int(20, ge=1), [10, 20, 100, 200], min_len=1),
    "variant": Choice("plain", ("plain", "bn")),

A bool is never an int (YAML's `true` is not 1), a float is never NaN or infinite, and an int is never a
float (`epochs: 2.5` is refused, not truncated). What ties two knobs together (warm-up shorter than training,
a width divisible by the heads) stays in the probe's `check`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Knob:
    """A knob's default and domain. Subclasses say what a value must be (`problem`) and how to say it
    (`domain`)."""

    default: Any

    def domain(self) -> str:  # pragma: no cover - every kind overrides it
        raise NotImplementedError

    def problem(self, value: Any) -> str | None:
        """None when `value` is in the domain, else why not (a few words)."""
        raise NotImplementedError  # pragma: no cover


def shown(value: Any) -> str:
    """A value as the user wrote it in YAML: true, null, 1.5, [1, 2], 'text'."""
    try:
        return json.dumps(value) if not isinstance(value, str) else repr(value)
    except (TypeError, ValueError):
        return repr(value)


def _bound(inclusive: float | None, exclusive: float | None, sign: str, strict: str) -> str:
    """One side of a range in words (`>= 1`, `< 1.0`), "" when open."""
    if inclusive is not None:
        return f"{sign} {shown(inclusive)}"
    return f"{strict} {shown(exclusive)}" if exclusive is not None else ""


@dataclass(frozen=True)
class _Range(Knob):
    """A number between optional bounds: `ge`/`le` inclusive, `gt`/`lt` exclusive."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    noun = "a number"  # what a value must be, in the domain's words

    def domain(self) -> str:
        low, high = _bound(self.ge, self.gt, ">=", ">"), _bound(self.le, self.lt, "<=", "<")
        bounds = " and ".join(x for x in (low, high) if x)
        return self.noun + (f" {bounds}" if bounds else "")

    def kind_problem(self, value: Any) -> str | None:  # pragma: no cover - every kind overrides it
        raise NotImplementedError

    def problem(self, value: Any) -> str | None:
        if (why := self.kind_problem(value)) is not None:
            return why
        outside = (
            (self.ge is not None and value < self.ge)
            or (self.gt is not None and value <= self.gt)
            or (self.le is not None and value > self.le)
            or (self.lt is not None and value >= self.lt)
        )
        return f"{shown(value)} is out of range" if outside else None


@dataclass(frozen=True)
class Int(_Range):
    noun = "a whole number"

    def kind_problem(self, value: Any) -> str | None:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else f"{shown(value)} is not a whole number"


@dataclass(frozen=True)
class Float(_Range):
    noun = "a finite number"

    def kind_problem(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{shown(value)} is not a number"
        return None if math.isfinite(value) else f"{shown(value)} is not finite"


@dataclass(frozen=True)
class Bool(Knob):
    def domain(self) -> str:
        return "true or false"

    def problem(self, value: Any) -> str | None:
        return None if isinstance(value, bool) else f"{shown(value)} is not true or false"


@dataclass(frozen=True)
class Choice(Knob):
    choices: tuple[str, ...] = ()

    def domain(self) -> str:
        return "one of " + ", ".join(self.choices)

    def problem(self, value: Any) -> str | None:
        return None if isinstance(value, str) and value in self.choices else f"{shown(value)} is not known"


@dataclass(frozen=True)
class Text(Knob):
    """Any short string (a class name)."""

    def domain(self) -> str:
        return "a name"

    def problem(self, value: Any) -> str | None:
        ok = isinstance(value, str) and 0 < len(value) <= 200
        return None if ok else f"{shown(value)} is not a name"


@dataclass(frozen=True)
class List(Knob):
    """A list whose items each meet `item`; `min_len`/`max_len` bound its length, `unique` forbids repeats."""

    item: Knob = None  # type: ignore[assignment]
    min_len: int = 0
    max_len: int | None = None
    unique: bool = False

    def domain(self) -> str:
        if self.max_len is None:
            count = f"{self.min_len} or more" if self.min_len else "any number of"
        elif self.min_len == self.max_len:
            count = f"exactly {self.min_len}"
        else:
            count = f"{self.min_len} to {self.max_len}"
        return f"a list of {count}{' different' if self.unique else ''} items, each {self.item.domain()}"

    def problem(self, value: Any) -> str | None:
        if not isinstance(value, list | tuple):
            return f"{shown(value)} is not a list"
        if len(value) < self.min_len or (self.max_len is not None and len(value) > self.max_len):
            return f"{len(value)} item(s)"
        for item in value:
            if (why := self.item.problem(item)) is not None:
                return why
        if self.unique and len({repr(v) for v in value}) < len(value):
            return "an item is repeated"
        return None


@dataclass(frozen=True)
class Fields(Knob):
    """A fixed-length list whose positions have domains of their own (`c_grid`: [first, last, count])."""

    fields: tuple[tuple[str, Knob], ...] = ()

    def domain(self) -> str:
        return "[" + ", ".join(f"{name}: {knob.domain()}" for name, knob in self.fields) + "]"

    def problem(self, value: Any) -> str | None:
        if not isinstance(value, list | tuple) or len(value) != len(self.fields):
            return f"{shown(value)} is not a list of {len(self.fields)}"
        for (name, knob), item in zip(self.fields, value, strict=True):
            if (why := knob.problem(item)) is not None:
                return f"{name}: {why}"
        return None


def defaults(knobs: dict[str, Knob]) -> dict[str, Any]:
    """Each knob's default (lists copied, so a caller cannot change the declaration)."""
    return {name: list(k.default) if isinstance(k.default, list) else k.default for name, k in knobs.items()}


def knob_problems(knobs: dict[str, Knob], values: dict[str, Any]) -> list[str]:
    """One line per value outside its knob's domain: `knobs.<name>: <why>; give <domain>`."""
    out = []
    for name, value in values.items():
        if name in knobs and (why := knobs[name].problem(value)) is not None:
            out.append(f"knobs.{name}: {why}; give {knobs[name].domain()}")
    return out
