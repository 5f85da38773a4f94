"""Ctrl-C during a chapter leaves nothing half-written, and the next run reuses what was finished."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from esae.runtime import repo_root

ROOT = repo_root()
DRIVER = "import sys; from pathlib import Path; from esae import book; " \
         "book.execute_chapter('03', 'smoke', out_dir=Path(sys.argv[1]), force=True)"


def _entries(cache):
    """Finished cache entries: ``{path: inode}`` (temporary ``.tmp-*`` directories excluded)."""
    return {p: p.stat().st_ino for p in cache.glob("*/*") if not p.name.startswith(".")}


def _params(tmp_path, jobs: int) -> Path:
    """A copy of the profiles with chapter 3's ``jobs`` set (1: the base models one after another)."""
    folder = tmp_path / "params"
    folder.mkdir()
    for path in (ROOT / "params").glob("*.yaml"):
        (folder / path.name).write_text(path.read_text())
    smoke = yaml.safe_load((folder / "smoke.yaml").read_text())
    smoke["03_base_models"]["jobs"] = jobs
    (folder / "smoke.yaml").write_text(yaml.safe_dump(smoke, sort_keys=False))
    return folder


def _interrupt_then_rerun(tmp_path, jobs: int) -> tuple[dict, dict]:
    """Run chapter 3 (smoke), Ctrl-C it as soon as its first cache entry exists, check that
    nothing half-written is left, run it again; the finished entries before and after the rerun."""
    cache, out = tmp_path / "cache", tmp_path / "chapters"
    env = {**os.environ, "ESAE_CACHE": str(cache), "ESAE_RESULTS": str(tmp_path / "results"),
           "ESAE_PARAMS": str(_params(tmp_path, jobs)), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-c", DRIVER, str(out)]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not _entries(cache) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # interrupt as soon as the first entry (a trained base model) exists
    assert proc.poll() is None, "the chapter finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
    proc.wait(timeout=120)
    assert proc.returncode != 0
    assert not list(out.glob("*.ipynb")), "an interrupted chapter must not leave an executed copy"
    assert not [p for p in cache.glob("*/.tmp-*")], "an interrupted write must not leave a temporary entry"
    before = _entries(cache)
    assert before

    subprocess.run(cmd, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=600)
    assert (out / "03_base_models.ipynb").is_file()
    after = _entries(cache)
    assert all(after.get(p) == ino for p, ino in before.items()), "finished entries must be reused, not rewritten"
    return before, after


@pytest.mark.slow
def test_interrupted_chapter_reruns_and_reuses_finished_entries(tmp_path):
    """One base model after another (``jobs: 1``): the interrupt lands between the first and the
    second, so the rerun reuses the first and trains the rest."""
    before, after = _interrupt_then_rerun(tmp_path, jobs=1)
    assert len(after) > len(before)


@pytest.mark.slow
def test_interrupted_training_workers_leave_no_partial_entry(tmp_path):
    """The default: the base models train side by side in worker processes, which Ctrl-C reaches
    too (same process group). Whether the other worker finished its model before the interrupt
    is a race, so this checks what must hold either way: nothing half-written, everything
    finished reused, and the rerun completes the chapter's two base models."""
    _, after = _interrupt_then_rerun(tmp_path, jobs=0)
    assert len([p for p in after if p.parent.name == "base_model"]) == 2
