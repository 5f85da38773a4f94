"""A small artifact cache keyed by the configuration that produced each artifact.

Every expensive step (datasets, checkpoints, fitted M, SAEs, probe scores, LM activations)
goes through :func:`cached_dir` or one of its typed wrappers. An entry is a directory
``<root>/<kind>/<key>/`` where ``key`` hashes the kind and its configuration; it holds the
payload files and ``meta.json`` (the configuration and a SHA-256 of every payload file).

- Writes are atomic: the entry is built in a temporary sibling directory and renamed into
  place, so an interrupted run leaves no half-written entry under the real name.
- Reads are verified: a missing ``meta.json``, a different configuration, a missing or
  altered file, or a payload that fails to load is treated as absent, removed and recomputed.
  So is a plain file (or a link) where an entry's or a kind's folder should be.
- Temporaries carry their process id; :func:`sweep_stale` (called by the book runner, and
  for its own kind before every computation) removes those of processes that have ended.

The root is ``ESAE_CACHE`` or ``<repo>/.cache/esae``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from esae.runtime import repo_root
from esae.temporaries import owned_prefix, sweep

T = TypeVar("T")
META = "meta.json"
FORMAT_VERSION = 1


def cache_root() -> Path:
    """The cache directory: ``ESAE_CACHE`` or ``<repo>/.cache/esae``."""
    return Path(os.environ.get("ESAE_CACHE", repo_root() / ".cache" / "esae"))


def _plain(obj: Any) -> Any:
    """Turn a configuration into JSON-able data (dataclasses, tuples, paths, numpy scalars)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {"__class__": type(obj).__name__, **{f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}}
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, torch.device):
        return str(obj)
    raise TypeError(f"cache configs may hold dataclasses, mappings, lists and scalars, got {type(obj).__name__}")


def config_key(kind: str, config: Any) -> str:
    """A stable 20-hex-digit key for ``(kind, config)``."""
    blob = json.dumps({"kind": kind, "config": _plain(config), "format": FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(entry: Path) -> list[Path]:
    return sorted(p for p in entry.rglob("*") if p.is_file() and p.name != META)


def _valid(entry: Path, kind: str, config: Any) -> bool:
    try:
        meta = json.loads((entry / META).read_text())
    except (OSError, ValueError):
        return False
    if meta.get("kind") != kind or meta.get("config") != _plain(config):
        return False
    recorded = meta.get("files", {})
    present = {str(p.relative_to(entry)): p for p in _files(entry)}
    if set(recorded) != set(present):
        return False
    return all(_digest(present[name]) == digest for name, digest in recorded.items())


def entry_path(kind: str, config: Any) -> Path:
    """Where the entry for ``(kind, config)`` lives (whether or not it exists yet)."""
    if not kind or "/" in kind or kind.startswith("."):
        raise ValueError(f"kind must be a non-empty name without '/' or a leading '.', got {kind!r}")
    return cache_root() / kind / config_key(kind, config)


def is_cached(kind: str, config: Any) -> bool:
    """Whether a valid entry exists for ``(kind, config)``."""
    entry = entry_path(kind, config)
    return entry.is_dir() and _valid(entry, kind, config)


def _make_folder(path: Path) -> None:
    """Create ``path`` (a kind's folder) as a folder, replacing a plain file or link in its way."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        warnings.warn(f"cache path {path} is not a folder; replacing it", stacklevel=3)
        path.unlink()
    path.mkdir(parents=True, exist_ok=True)


def _remove(entry: Path) -> None:
    """Remove an entry, whatever it is (folder, plain file, link)."""
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)


def sweep_stale(kind: str | None = None) -> list[Path]:
    """Remove the ``.tmp-*`` folders that ended processes left in the cache (all kinds, or
    one); return what was removed."""
    root = cache_root()
    kinds = [root / kind] if kind else ([p for p in root.iterdir() if p.is_dir()] if root.is_dir() else [])
    return [path for folder in kinds for path in sweep(folder, ".tmp-")]


class NotCached(LookupError):
    """Raised under :func:`read_only` where an entry would have to be computed; ``kind`` names it."""

    def __init__(self, kind: str, entry: Path):
        self.kind, self.entry = kind, entry
        super().__init__(f"no cached {kind} for this configuration (would be {entry})")


_read_only_depth = 0


@contextlib.contextmanager
def read_only() -> Iterator[None]:
    """Within the block, a cache miss raises :class:`NotCached` instead of computing: for
    commands that must only read what the chapters made (``python -m esae export``)."""
    global _read_only_depth
    _read_only_depth += 1
    try:
        yield
    finally:
        _read_only_depth -= 1


def is_read_only() -> bool:
    """Whether a :func:`read_only` block is active."""
    return _read_only_depth > 0


def cached_dir(kind: str, config: Any, compute: Callable[[Path], None]) -> Path:
    """Return the entry directory for ``(kind, config)``, calling ``compute(tmpdir)`` to fill
    it (any files it writes into ``tmpdir``) when no valid entry exists (under :func:`read_only`:
    raising :class:`NotCached`)."""
    entry = entry_path(kind, config)
    if entry.is_dir() and not entry.is_symlink():
        if _valid(entry, kind, config):
            return entry
    if is_read_only():
        raise NotCached(kind, entry)
    if entry.is_dir() and not entry.is_symlink():
        warnings.warn(f"cache entry {entry} is corrupt or stale; recomputing", stacklevel=2)
        _remove(entry)
    elif entry.is_symlink() or entry.exists():
        warnings.warn(f"cache entry {entry} is not a folder; recomputing", stacklevel=2)
        _remove(entry)
    _make_folder(entry.parent)
    sweep(entry.parent, ".tmp-")
    tmp = Path(tempfile.mkdtemp(prefix=owned_prefix(f".tmp-{entry.name}-"), dir=entry.parent))
    try:
        compute(tmp)
        files = {str(p.relative_to(tmp)): _digest(p) for p in _files(tmp)}
        meta = {"kind": kind, "config": _plain(config), "files": files, "format": FORMAT_VERSION}
        (tmp / META).write_text(json.dumps(meta, indent=1))
        if entry.is_symlink() or (entry.exists() and not entry.is_dir()):
            _remove(entry)  # a file appeared while computing: the finished entry takes its place
        try:
            os.rename(tmp, entry)
        except OSError:  # another process finished the same entry first: keep theirs
            if not (entry.is_dir() and _valid(entry, kind, config)):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return entry


def _cached_obj(kind: str, config: Any, compute: Callable[[], T], name: str,
                save: Callable[[T, Path], None], load: Callable[[Path], T]) -> T:
    result: list[T] = []

    def fill(tmp: Path) -> None:
        obj = compute()
        save(obj, tmp / name)
        result.append(obj)

    entry = cached_dir(kind, config, fill)
    if result:
        return result[0]
    try:
        return load(entry / name)
    except Exception as err:  # noqa: BLE001 - any unreadable payload is recomputed
        warnings.warn(f"cache entry {entry} failed to load ({err}); recomputing", stacklevel=3)
        shutil.rmtree(entry, ignore_errors=True)
        return _cached_obj(kind, config, compute, name, save, load)


def cached_torch(kind: str, config: Any, compute: Callable[[], T]) -> T:
    """Memoise ``compute()`` (tensors, state dicts, dicts of them) with ``torch.save``."""
    return _cached_obj(kind, config, compute, "value.pt", lambda obj, p: torch.save(obj, p),
                       lambda p: torch.load(p, map_location="cpu", weights_only=False))


def cached_json(kind: str, config: Any, compute: Callable[[], T]) -> T:
    """Memoise ``compute()`` returning JSON-able data."""
    return _cached_obj(kind, config, compute, "value.json", lambda obj, p: p.write_text(json.dumps(obj)),
                       lambda p: json.loads(p.read_text()))


def cached_arrays(kind: str, config: Any, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Memoise ``compute()`` returning a dict of NumPy arrays (stored as ``.npz``)."""
    def save(obj: dict[str, np.ndarray], path: Path) -> None:
        with open(path, "wb") as f:
            np.savez(f, **obj)

    def load(path: Path) -> dict[str, np.ndarray]:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}

    return _cached_obj(kind, config, compute, "value.npz", save, load)
