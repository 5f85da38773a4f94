"""Parameter profiles (``params/<profile>.yaml``) and the checks every chapter runs on entry.

A profile holds a ``common`` section (seed, device) and one section per chapter, named by
the notebook's stem (``03_base_models``). The book runner injects ``common`` merged with the
chapter's section into the notebook's ``parameters`` cell through papermill; the notebook then
builds its config dataclasses, whose ``__post_init__`` calls the checks below, so a bad value
stops the run with a message naming the parameter and what is allowed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from esae.runtime import repo_root

PROFILES = ("smoke", "default", "paper")


def params_dir() -> Path:
    """Where the profiles live: ``ESAE_PARAMS`` or ``<repo>/params``."""
    return Path(os.environ.get("ESAE_PARAMS", repo_root() / "params"))


def check_profile(profile: str) -> str:
    """Fail unless ``profile`` names one of the profiles."""
    return check_choice("profile", profile, PROFILES)


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
        raise ValueError(f"{name} must be an int{_range(lo, hi)}, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"{name} must be an int{_range(lo, hi)}, got {value!r}")
    return value


def check_float(name: str, value: Any, lo: float | None = None, hi: float | None = None,
                *, lo_open: bool = False) -> float:
    """Fail unless ``value`` is a real number in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number{_range(lo, hi, lo_open)}, got {value!r}")
    too_low = lo is not None and (value <= lo if lo_open else value < lo)
    if too_low or (hi is not None and value > hi):
        raise ValueError(f"{name} must be a number{_range(lo, hi, lo_open)}, got {value!r}")
    return float(value)


def check_int_list(name: str, values: Any, lo: int | None = None, hi: int | None = None) -> tuple[int, ...]:
    """Fail unless ``values`` is a non-empty list of ints each in ``[lo, hi]``."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
        raise ValueError(f"{name} must be a non-empty list of ints{_range(lo, hi)}, got {values!r}")
    for v in values:
        check_int(f"each entry of {name}", v, lo, hi)
    return tuple(values)


def _range(lo: Any, hi: Any, lo_open: bool = False) -> str:
    if lo is None and hi is None:
        return ""
    if hi is None:
        return f" {'>' if lo_open else '>='} {lo}"
    if lo is None:
        return f" <= {hi}"
    return f" in {'(' if lo_open else '['}{lo}, {hi}]"


def load_profile(profile: str) -> dict[str, Any]:
    """Read ``params/<profile>.yaml`` as a dict of sections."""
    check_profile(profile)
    path = params_dir() / f"{profile}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"profile file {path} is missing")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of sections, got {type(data).__name__}")
    return data


def chapter_parameters(stem: str, profile: str) -> dict[str, Any]:
    """The parameters papermill injects into chapter ``stem``: ``profile``, then the
    profile's ``common`` section, then the chapter's own section (which wins)."""
    data = load_profile(profile)
    merged: dict[str, Any] = {"profile": profile}
    merged.update(data.get("common") or {})
    merged.update(data.get(stem) or {})
    return merged
