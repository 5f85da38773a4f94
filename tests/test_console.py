"""What `make book` prints: a live progress line while a chapter runs, little else."""

import os
import subprocess
import sys
import time

import pytest

from esae import book
from esae.runtime import repo_root

ROOT = repo_root()


def _run(args: list[str], env: dict) -> list[tuple[float, str]]:
    """Run ``python -m esae.book ARGS`` with stdout captured (not a terminal); every line with the
    seconds since the start at which it arrived."""
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "esae.book", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=env.get("ESAE_ROOT", ROOT))
    lines = [(time.monotonic() - start, line.rstrip("\n")) for line in proc.stdout]
    assert proc.wait() == 0, "\n".join(text for _, text in lines)
    return lines


def test_progress_line_and_elapsed_estimate():
    p = book.Progress("05_x", [{"cell_type": "markdown", "source": "# Title"}, {"cell_type": "code", "source": "1"},
                                {"cell_type": "markdown", "source": "## Training"}, {"cell_type": "code", "source": "2"}],
                      estimate=125.0)
    p.cell_started(1)
    p.cell_finished({"cell_type": "code"})
    p.cell_started(3)
    line = p.line()
    assert line.startswith("[esae] 05_x  1/2 cells  0:00 of ~2:05") and line.endswith("· Training")


@pytest.mark.slow
def test_a_cold_chapter_reports_progress_at_least_every_ten_seconds(workspace, tmp_path):
    # its own results folder: the session's smoke results (and their timings) stay as the book left them
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ESAE_RESULTS": str(tmp_path / "results")}
    env.pop("ESAE_PROGRESS_EVERY", None)
    lines = _run(["run", "01", "--profile", "smoke", "--force", "--out-dir", str(tmp_path / "out")], env)
    progress = [t for t, text in lines if text.startswith("[esae] 01_groups ") and " cells " in text]
    times = [t for t, _ in lines]
    assert progress, lines  # the first report comes at once; a chapter of under 5 s needs no second one
    assert progress[0] - times[0] <= 10.0, lines
    assert times[0] <= 30.0, lines  # the interpreter and torch start first
    assert max(b - a for a, b in zip(times, times[1:])) <= 10.0, lines
    assert not any("without encryption" in text for _, text in lines)


@pytest.mark.slow
def test_warm_book_build_prints_at_most_thirty_lines(smoke_book):
    workspace, _ = smoke_book
    for name in ("notebooks", "esae", "params"):  # the chapters' sources: every stamp matches the executed copies
        if not (workspace / name).exists():
            (workspace / name).symlink_to(ROOT / name)
    env = {**os.environ, "ESAE_ROOT": str(workspace), "PYTHONPATH": str(ROOT)}
    # other tests may have re-run a chapter in this workspace since (its new timings make the summary
    # page stale): the first build settles that, the second is the warm one
    _run(["build", "--profile", "smoke"], env)
    lines = [text for _, text in _run(["build", "--profile", "smoke"], env)]
    assert len(lines) <= 30, lines
    assert all("unchanged, kept" in text for text in lines if text.startswith("[esae] 0")), lines
    assert any(text.startswith("[esae] verdicts (smoke):") for text in lines)
    assert lines[-1].startswith("[esae] book built:")
    assert not any("\x1b[" in text or "without encryption" in text for text in lines)
