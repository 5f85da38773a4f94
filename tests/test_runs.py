"""What a run leaves behind: the same bytes every time, no temporaries of killed runs, and never
results under a profile name whose parameters were not used."""

import filecmp
import os
import subprocess
import sys
import tempfile

import pytest

from esae import book, params
from esae.runtime import repo_root

ROOT = repo_root()
CHEAP = ("01_groups", "02_dataset")  # the chapters that run in seconds under smoke


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temporaries_of_killed_runs_are_swept_on_the_next_run(tmp_path, monkeypatch):
    """After SIGKILL: a hidden executed copy, the converted source in the system temp folder, a
    cache temporary and a results temporary stay. The next run removes those whose process
    ended, keeps those of running processes and everything else."""
    monkeypatch.setenv("ESAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ESAE_RESULTS", str(tmp_path / "results"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    out, tmp, kind, results = (tmp_path / "chapters", tmp_path / "tmp", tmp_path / "cache" / "sae",
                               tmp_path / "results" / "smoke")
    for folder in (out, tmp, kind, results):
        folder.mkdir(parents=True)
    dead, alive = _dead_pid(), os.getpid()
    stale = [out / f".04_fitting_m-p{dead}-ab12cd34.ipynb", tmp / f"esae-src-p{dead}-ab12cd34.ipynb",
             kind / f".tmp-0123456789abcdef0123-p{dead}-ab12cd34", results / f".04_fitting_m-p{dead}-ab12.json"]
    running = [out / f".04_fitting_m-p{alive}-ab12cd34.ipynb", tmp / f"esae-src-p{alive}-ab12cd34.ipynb",
               kind / f".tmp-0123456789abcdef0123-p{alive}-ab12cd34"]
    legacy_old, legacy_new = out / ".03_base_models-k3j4l5m6.ipynb", out / ".05_equivariant_sae-k3j4l5m6.ipynb"
    others = [out / "04_fitting_m.ipynb", tmp / "someone-elses.ipynb", kind / "0123456789abcdef0123",
              results / "04_fitting_m.json", legacy_new]
    for path in stale + running + others + [legacy_old]:
        if path.parent == kind:
            path.mkdir()
            (path / "weights.pt").write_bytes(b"x")
        else:
            path.write_text("x")
    os.utime(legacy_old, (0, 0))  # a temporary named before process ids, and days old
    removed = book.sweep_stale_temporaries(out, ROOT, "smoke")
    assert sorted(removed) == sorted(stale + [legacy_old])
    assert not any(p.exists() for p in stale + [legacy_old])
    assert all(p.exists() for p in running + others)


@pytest.mark.slow
def test_two_cold_smoke_runs_give_the_same_result_bytes(smoke_book, tmp_path, monkeypatch):
    """Same profile, same bytes: the cheap chapters run cold (own cache, own results) give the
    result files of the suite's cold smoke build byte for byte. (``timings.json`` holds wall
    times and is the one file expected to differ.)"""
    workspace, _ = smoke_book
    monkeypatch.setenv("ESAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ESAE_RESULTS", str(tmp_path / "results"))
    for stem in CHEAP:
        book.execute_chapter(stem, "smoke", out_dir=tmp_path / "chapters", root=ROOT, force=True)
    compared = [f"{s}.json" for s in CHEAP]
    assert sorted(p.name for p in (tmp_path / "results" / "smoke").iterdir()) == sorted(compared + ["timings.json"])
    match, mismatch, errors = filecmp.cmpfiles(workspace / "results" / "smoke", tmp_path / "results" / "smoke",
                                               compared, shallow=False)
    assert mismatch == [] and errors == [] and match == compared


@pytest.mark.slow
def test_plain_papermill_never_writes_results_under_a_profile_whose_sizes_it_did_not_use(tmp_path, monkeypatch):
    """``papermill -p profile smoke`` alone runs the notebook's default sizes: refused before any
    work, naming the parameter; with ``-f`` on ``esae.book params`` output the chapter runs and its
    results are the runner's."""
    import jupytext
    import papermill

    monkeypatch.setenv("ESAE_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("ESAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    source = tmp_path / "01_groups.ipynb"
    jupytext.write(jupytext.read(ROOT / "notebooks" / "01_groups.py"), source)
    with pytest.raises(papermill.PapermillExecutionError, match=r"n_samples=4000 where params/smoke.yaml has 1500"):
        papermill.execute_notebook(str(source), str(tmp_path / "out.ipynb"), parameters={"profile": "smoke"},
                                   cwd=str(ROOT), progress_bar=False)
    assert not (tmp_path / "results" / "smoke" / "01_groups.json").exists()

    flat = tmp_path / "p.yaml"
    book.write_params("01", "smoke", flat)
    import yaml

    papermill.execute_notebook(str(source), str(tmp_path / "out.ipynb"), parameters=yaml.safe_load(flat.read_text()),
                               cwd=str(ROOT), progress_bar=False)
    by_papermill = (tmp_path / "results" / "smoke" / "01_groups.json").read_bytes()
    book.execute_chapter("01", "smoke", out_dir=tmp_path / "chapters", root=ROOT, force=True)
    assert (tmp_path / "results" / "smoke" / "01_groups.json").read_bytes() == by_papermill


def test_check_run_outside_a_kernel_is_a_no_op():
    params.check_run("01_groups", "smoke")  # a script or a test: nothing to compare
