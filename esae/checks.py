"""Checks of a single value, with one-line errors naming the parameter, what is allowed and
what was given (``ValueError("k must be an int in [1, 2048], got 0")``).

The config dataclasses of every module call these in ``__post_init__``, so a bad value stops
where it enters, whether it came from a chapter's parameters or from a user's own code.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """Fail unless ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def check_int(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    """Fail unless ``value`` is an int in ``[lo, hi]`` (either bound may be open)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int{bounds(lo, hi)}, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"{name} must be an int{bounds(lo, hi)}, got {value!r}")
    return value


def check_float(name: str, value: Any, lo: float | None = None, hi: float | None = None,
                *, lo_open: bool = False) -> float:
    """Fail unless ``value`` is a real number in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number{bounds(lo, hi, lo_open)}, got {value!r}")
    too_low = lo is not None and (value <= lo if lo_open else value < lo)
    if too_low or (hi is not None and value > hi):
        raise ValueError(f"{name} must be a number{bounds(lo, hi, lo_open)}, got {value!r}")
    return float(value)


def check_int_list(name: str, values: Any, lo: int | None = None, hi: int | None = None) -> tuple[int, ...]:
    """Fail unless ``values`` is a non-empty list of ints each in ``[lo, hi]``."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
        raise ValueError(f"{name} must be a non-empty list of ints{bounds(lo, hi)}, got {values!r}")
    for v in values:
        check_int(f"each entry of {name}", v, lo, hi)
    return tuple(values)


def bounds(lo: Any, hi: Any, lo_open: bool = False) -> str:
    """How a range reads in a message: ``" >= 1"``, ``" in (0, 1]"``, ``""`` when unbounded."""
    if lo is None and hi is None:
        return ""
    if hi is None:
        return f" {'>' if lo_open else '>='} {lo}"
    if lo is None:
        return f" <= {hi}"
    return f" in {'(' if lo_open else '['}{lo}, {hi}]"
