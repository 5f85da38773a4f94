"""Ctrl-C during a chapter leaves nothing half-written, and the next run reuses what was finished."""

import os
import signal
import subprocess
import sys
import time

import pytest

from esae.runtime import repo_root

ROOT = repo_root()
DRIVER = "import sys; from pathlib import Path; from esae import book; " \
         "book.execute_chapter('03', 'smoke', out_dir=Path(sys.argv[1]), force=True)"


def _entries(cache):
    """Finished cache entries: ``{path: inode}`` (temporary ``.tmp-*`` directories excluded)."""
    return {p: p.stat().st_ino for p in cache.glob("*/*") if not p.name.startswith(".")}


@pytest.mark.slow
def test_interrupted_chapter_reruns_and_reuses_finished_entries(tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "chapters"
    env = {**os.environ, "ESAE_CACHE": str(cache), "ESAE_RESULTS": str(tmp_path / "results"),
           "PYTHONPATH": str(ROOT)}
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
    assert len(after) > len(before)
