"""Headline numbers of each chapter, as plain JSON in ``results/<profile>/<stem>.json``."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from esae.params import check_profile
from esae.runtime import repo_root


def results_dir(profile: str) -> Path:
    """``ESAE_RESULTS/<profile>`` or ``<repo>/results/<profile>``."""
    check_profile(profile)
    return Path(os.environ.get("ESAE_RESULTS", repo_root() / "results")) / profile


def write_results(profile: str, stem: str, data: dict[str, Any]) -> Path:
    """Write ``data`` to ``results/<profile>/<stem>.json`` atomically; return the path."""
    path = results_dir(profile) / f"{stem}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, sort_keys=False, allow_nan=False)
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}-", suffix=".json", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    os.replace(tmp, path)
    return path


def read_results(profile: str, stem: str) -> dict[str, Any]:
    """Read what :func:`write_results` wrote; a clear error names the chapter to run first."""
    path = results_dir(profile) / f"{stem}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run chapter {stem} with PROFILE={profile} first")
    return json.loads(path.read_text())
