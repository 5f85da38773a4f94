"""Temporary files named by the process that owns them, so the next run can sweep those a
killed process left behind (SIGKILL skips every ``finally``).

A temporary's name carries its owner's process id as a ``p<pid>-`` part
(``.04_fitting_m-p1234-x1y2z3.ipynb``). A sweep removes the ones whose owner is no longer
running on this machine, and older names without a process id once they are a day old.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from pathlib import Path

LEGACY_AGE_S = 24 * 3600


_OWNER = re.compile(r"(?:^|-)p(\d+)-")


def owned_prefix(prefix: str) -> str:
    """``prefix`` followed by ``p<this process's id>-``: the prefix to give ``tempfile``."""
    return f"{prefix}p{os.getpid()}-"


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (a zombie counts as running)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(folder: Path, prefix: str, suffix: str = "", *, name: str = r".*") -> list[Path]:
    """Remove the temporaries ``<prefix>...<suffix>`` (files or folders; the middle matching
    ``name``) in ``folder`` whose owning process has ended; return what was removed."""
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    pattern = re.compile(re.escape(prefix) + name + re.escape(suffix))
    for path in folder.iterdir():
        if not pattern.fullmatch(path.name):
            continue
        owner = _OWNER.search(path.name[len(prefix):])
        try:
            if owner is not None:
                if pid_alive(int(owner.group(1))):
                    continue
            elif time.time() - path.lstat().st_mtime < LEGACY_AGE_S:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
        except OSError:
            continue
    return removed


def system_temp() -> Path:
    """The system's temporary folder."""
    return Path(tempfile.gettempdir())
