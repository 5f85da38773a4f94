"""Headline numbers of each chapter, as plain JSON in ``results/<profile>/<stem>.json``.

Results are labelled by the profile: inside a chapter's kernel, :func:`write_results` refuses
to write them when a parameter papermill did not inject differs from that profile's (the
notebook's built-in sizes), and records the parameters injected with other values than the
profile's (``papermill -f <profile's parameters> -p epochs 3``) under ``"overrides"``
(:func:`esae.params.check_run`).

Numbers are written with :data:`DIGITS` significant digits: more than any comparison in the book
needs, and free of the last bits that multithreaded BLAS changes from run to run, so the same
profile gives the same bytes (and later chapters' change stamps, which include earlier results,
stay put).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from esae.params import check_profile, check_run
from esae.runtime import repo_root
from esae.temporaries import owned_prefix


DIGITS = 10


def rounded(data: Any, digits: int = DIGITS, zero_below: float = 0.0) -> Any:
    """``data`` (dicts, lists, numbers) with every float rounded to ``digits`` significant
    digits, and those smaller in magnitude than ``zero_below`` (float round-off, e.g. the error
    of an exact representation) set to 0."""
    if isinstance(data, dict):
        return {k: rounded(v, digits, zero_below) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [rounded(v, digits, zero_below) for v in data]
    if isinstance(data, float) and math.isfinite(data):
        return 0.0 if abs(data) < zero_below else float(f"{data:.{digits}g}")
    return data


def results_dir(profile: str) -> Path:
    """``ESAE_RESULTS/<profile>`` or ``<repo>/results/<profile>``."""
    check_profile(profile)
    return Path(os.environ.get("ESAE_RESULTS", repo_root() / "results")) / profile


def write_results(profile: str, stem: str, data: dict[str, Any]) -> Path:
    """Write ``data`` to ``results/<profile>/<stem>.json`` atomically; return the path.

    Inside a Jupyter kernel, fails (writing nothing) when a parameter of chapter ``stem`` that
    papermill did not inject differs from ``profile``'s; injected values that differ are recorded
    first, as ``"overrides"``. Floats are rounded to :data:`DIGITS` significant digits. A chapter
    :mod:`esae.verdicts` judges gets its ``"verdicts"`` list added to ``data`` (in place) unless it
    holds one already."""
    from esae import verdicts

    path = results_dir(profile) / f"{stem}.json"
    overrides = check_run(stem, profile)
    if stem in verdicts.CHAPTERS:
        verdicts.attach(stem, data)
    if overrides:
        data = {"overrides": overrides, **data}
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(rounded(data), indent=2, sort_keys=False, allow_nan=False)
    fd, tmp = tempfile.mkstemp(prefix=owned_prefix(f".{stem}-"), suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def read_results(profile: str, stem: str) -> dict[str, Any]:
    """Read what :func:`write_results` wrote; a clear error names the chapter to run first."""
    path = results_dir(profile) / f"{stem}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run chapter {stem} with PROFILE={profile} first")
    return json.loads(path.read_text())
