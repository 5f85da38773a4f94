import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from esae import cache


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ESAE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@dataclass(frozen=True)
class Cfg:
    n: int
    lr: float = 1e-3


def test_computes_once_and_reuses():
    calls = []

    def compute():
        calls.append(1)
        return {"w": torch.arange(5.0)}

    a = cache.cached_torch("model", Cfg(3), compute)
    b = cache.cached_torch("model", Cfg(3), compute)
    assert len(calls) == 1
    assert torch.equal(a["w"], b["w"])
    assert cache.is_cached("model", Cfg(3))


def test_config_change_invalidates():
    calls = []
    for cfg in (Cfg(3), Cfg(3, lr=1e-2), Cfg(3)):
        cache.cached_json("x", cfg, lambda: calls.append(cfg) or len(calls))
    assert len(calls) == 2
    assert cache.config_key("x", Cfg(3)) != cache.config_key("x", Cfg(3, lr=1e-2))
    assert cache.config_key("x", Cfg(3)) != cache.config_key("y", Cfg(3))


def test_interrupted_write_leaves_no_entry(tmp_cache):
    def boom(tmp):
        (tmp / "half.bin").write_bytes(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.cached_dir("thing", {"a": 1}, boom)
    assert not cache.is_cached("thing", {"a": 1})
    leftovers = list((tmp_cache / "thing").iterdir())
    assert leftovers == []


@pytest.mark.parametrize("damage", ["truncate", "delete_meta", "extra_file", "wrong_config"])
def test_corrupt_entry_is_recomputed(damage):
    value = cache.cached_arrays("arr", {"k": 1}, lambda: {"a": np.arange(100)})
    entry = cache.entry_path("arr", {"k": 1})
    payload = entry / "value.npz"
    if damage == "truncate":
        payload.write_bytes(payload.read_bytes()[:10])
    elif damage == "delete_meta":
        (entry / "meta.json").unlink()
    elif damage == "extra_file":
        (entry / "stray.txt").write_text("?")
    else:
        meta = json.loads((entry / "meta.json").read_text())
        meta["config"] = {"k": 2}
        (entry / "meta.json").write_text(json.dumps(meta))
    assert not cache.is_cached("arr", {"k": 1})
    calls = []
    with pytest.warns(UserWarning, match="corrupt or stale"):
        again = cache.cached_arrays("arr", {"k": 1}, lambda: calls.append(1) or {"a": np.arange(100)})
    assert calls == [1]
    np.testing.assert_array_equal(again["a"], value["a"])
    assert cache.is_cached("arr", {"k": 1})


def test_unloadable_payload_with_matching_digest_is_recomputed(monkeypatch):
    cache.cached_torch("t", {"v": 1}, lambda: torch.ones(2))
    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("bad pickle")))
    with pytest.warns(UserWarning, match="failed to load"):
        out = cache.cached_torch("t", {"v": 1}, lambda: calls.append(1) or torch.zeros(2))
    monkeypatch.setattr(torch, "load", real_load)
    assert calls == [1] and torch.equal(out, torch.zeros(2))


def test_bad_kind_and_config():
    with pytest.raises(ValueError, match="kind"):
        cache.entry_path("../escape", {})
    with pytest.raises(TypeError, match="cache configs"):
        cache.config_key("x", {"f": object()})


def test_plain_file_where_an_entry_folder_should_be_is_repaired(tmp_cache):
    entry = cache.entry_path("arr", {"k": 1})
    entry.parent.mkdir(parents=True)
    entry.write_text("not a folder")
    with pytest.warns(UserWarning, match="not a folder"):
        value = cache.cached_arrays("arr", {"k": 1}, lambda: {"a": np.arange(3)})
    np.testing.assert_array_equal(value["a"], np.arange(3))
    assert entry.is_dir() and cache.is_cached("arr", {"k": 1})


def test_plain_file_where_a_kind_folder_should_be_is_repaired(tmp_cache):
    tmp_cache.mkdir(parents=True)
    (tmp_cache / "arr").write_text("not a folder")
    (tmp_cache / "other").mkdir()
    (tmp_cache / "other" / "keep").write_text("kept")
    with pytest.warns(UserWarning, match="not a folder"):
        cache.cached_json("arr", {"k": 1}, lambda: [1, 2])
    assert cache.cached_json("arr", {"k": 1}, lambda: [3]) == [1, 2]
    assert (tmp_cache / "other" / "keep").read_text() == "kept"


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_ended_processes_are_swept(tmp_cache):
    import os

    kind = tmp_cache / "model"
    kind.mkdir(parents=True)
    dead = kind / f".tmp-0123abcd-p{_dead_pid()}-x1y2"
    alive = kind / f".tmp-0123abcd-p{os.getpid()}-x1y2"
    for folder in (dead, alive):
        folder.mkdir()
        (folder / "half.bin").write_bytes(b"partial")
    finished = cache.cached_json("model", {"n": 1}, lambda: 1) and cache.entry_path("model", {"n": 1})
    assert not dead.exists(), "a computation sweeps its kind's temporaries of ended processes"
    assert alive.exists() and finished.is_dir()
    os.utime(alive, (0, 0))  # even an old temporary stays while its process runs
    assert cache.sweep_stale() == [] and alive.exists()
