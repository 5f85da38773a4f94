"""Bad input stops with one clear line, and nothing in the cache or the results is overwritten.

Each case runs the book's command line (``python -m esae.book``, what ``make chapter`` and
``make book`` call) on a broken copy of a profile, and checks the message (file, chapter,
parameter, allowed values, value received), the exit status, and that the results, the executed
copies and the cache are exactly as they were.
"""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from esae import book, params
from esae.runtime import repo_root
from esae.temporaries import system_temp

ROOT = repo_root()


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """Copies of the profiles in ``params/``, empty cache and results folders with one sentinel
    file each (as a previous good run would have left them), and the chapters' output folder."""
    shutil.copytree(ROOT / "params", tmp_path / "params")
    for name in ("cache", "results/smoke", "chapters"):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "results" / "smoke" / "01_groups.json").write_text('{"good": 1}\n')
    (tmp_path / "chapters" / "01_groups.ipynb").write_text("{}")
    (tmp_path / "cache" / "kind").mkdir()
    (tmp_path / "cache" / "kind" / "entry").write_text("payload")
    monkeypatch.setenv("ESAE_PARAMS", str(tmp_path / "params"))
    monkeypatch.setenv("ESAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ESAE_RESULTS", str(tmp_path / "results"))
    return tmp_path


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "params" not in p.parts}


def _edit(sandbox: Path, old: str, new: str) -> None:
    path = sandbox / "params" / "smoke.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def _run(*args: str) -> subprocess.CompletedProcess:
    """``python -m esae.book ARGS`` in a fresh process, as ``make chapter`` runs it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "esae.book", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def _refused(sandbox: Path, *args: str) -> str:
    """Run, expect a refusal before any kernel starts; return the one error line."""
    before = _snapshot(sandbox)
    proc = _run(*args, "--profile", "smoke")
    errors = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(errors) == 1 and errors[0].startswith("[esae] error: "), proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert _snapshot(sandbox) == before, "a refused run must leave cache and results alone"
    return errors[0]


@pytest.mark.parametrize("old,new,message", [
    ("03_base_models:", "03_base_model:",
     r"smoke.yaml: unknown section '03_base_model' \(did you mean 03_base_models\?\)"),
    ("04_fitting_m:\n  epochs: 2", "04_fitting_m:\n  epochs: 2\n  n_epochs: 3",
     "smoke.yaml, 04_fitting_m: unknown parameter n_epochs; the chapter declares profile, seed"),
    ("seed: 0", "seed: true", r"smoke.yaml, 04_fitting_m: seed must be an int >= 0, got True"),
    ("lr: 0.001\n  penalty", "lr: -1e-3\n  penalty", r"smoke.yaml, 04_fitting_m: lr must be in \(0.0, 1.0\], got -0.001"),
    ("  penalty: 1.0", "  penalty: [1]", r"04_fitting_m: penalty must be a number >= 0.0, got \[1\]"),
    ("device: auto", "device: tpu", r"device must be auto, cpu, cuda or cuda:N, got 'tpu'"),
])
def test_bad_profile_for_chapter_4_is_refused_in_one_line(sandbox, old, new, message):
    import re

    _edit(sandbox, old, new)
    line = _refused(sandbox, "run", "04")
    assert re.search(message, line), line


def test_missing_section_names_file_and_section(sandbox):
    _edit(sandbox, "01_groups:\n  n_samples: 1500\n", "")
    line = _refused(sandbox, "run", "01")
    assert "smoke.yaml has no section 01_groups" in line


def test_malformed_yaml_names_file_and_line(sandbox):
    _edit(sandbox, "  n_show: 16", "  n_show: [16")
    line = _refused(sandbox, "run", "01")
    assert "smoke.yaml:" in line and "malformed YAML" in line
    bad_line = int(line.split("smoke.yaml:")[1].split(":")[0])
    text = (sandbox / "params" / "smoke.yaml").read_text().splitlines()
    assert bad_line == next(i for i, t in enumerate(text, 1) if "[16" in t)


@pytest.mark.parametrize("old,new,message", [
    ("figure3_ks: [8]", "figure3_ks: [64]",
     r"06_probing: figure3_ks must be a subset of 05_equivariant_sae's ks \[8, 16, 32\], got \[64\]"),
    ("sweep_ks: [8]", "sweep_ks: [7]",
     r"06_probing: sweep_ks must be a subset of 05_equivariant_sae's ks \[8, 16, 32\], got \[7\]"),
    ("figure7_panels: [mlp/L8]", "figure7_panels: [mlp/8]",
     r"each entry of figure7_panels must be '<mlp\|cnn>/L<length 1..256>'.*got 'mlp/8'"),
    ("probes", "n_jobs: 0\n#", r"n_jobs must be >= -1 and not 0, got 0"),
])
def test_values_that_must_be_in_another_list(sandbox, old, new, message):
    import re

    if old == "probes":  # smoke.yaml sets no probes: add n_jobs instead
        _edit(sandbox, "  xgb_max_bin: 64", "  xgb_max_bin: 64\n  n_jobs: 0")
    else:
        _edit(sandbox, old, new)
    line = _refused(sandbox, "build")  # the whole book: every chapter is checked before the first runs
    assert re.search(message, line), line


def test_yaml_exponent_without_dot_is_a_number(sandbox):
    _edit(sandbox, "lr: 0.001\n  penalty", "lr: 1e-3\n  penalty")
    assert params.chapter_parameters("04_fitting_m", "smoke")["lr"] == 0.001
    assert params.resolved_parameters("04_fitting_m", "smoke")["lr"] == 0.001


def test_params_command_writes_what_papermill_reads(sandbox, tmp_path):
    import yaml

    out = tmp_path / "p.yaml"
    assert book.main(["params", "06", "--profile", "smoke", "-o", str(out)]) == 0
    flat = yaml.safe_load(out.read_text())
    assert flat == params.resolved_parameters("06_probing", "smoke")
    assert flat["profile"] == "smoke" and flat["figure3_ks"] == [8] and "compared_saes" in flat


FAILING = '''# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% tags=["parameters"]
profile: str = "smoke"  # profile
seed: int = 0  # seed
device: str = "auto"  # device
n_samples: int = 100  # samples

# %%
import sys

# what a native library writes to the kernel's own stderr (as libzmq's abort message at shutdown)
print("Assertion failed: noise from outside the notebook", file=sys.__stderr__, flush=True)

# %%
raise ValueError(f"n_samples must be an int >= 10**9, got {n_samples}")
'''

DYING = FAILING.replace('raise ValueError(f"n_samples must be an int >= 10**9, got {n_samples}")',
                        "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")


def _kernel_logs() -> set[str]:
    return {p.name for p in system_temp().glob("esae-kernel-*.log")}


def _chapter_root(sandbox: Path, monkeypatch, source: str) -> Path:
    """A repository root whose only chapter, 01_groups, is ``source``, with a previous executed copy;
    returns its output folder."""
    root = sandbox / "root"
    (root / "notebooks").mkdir(parents=True)
    (root / "notebooks" / "01_groups.py").write_text(source)
    (sandbox / "params" / "smoke.yaml").write_text("common: {seed: 0, device: auto}\n01_groups: {n_samples: 150}\n")
    out = root / "book" / "chapters"
    out.mkdir(parents=True)
    (out / "01_groups.ipynb").write_text("previous")
    monkeypatch.setenv("ESAE_ROOT", str(root))
    return out


@pytest.mark.slow
def test_failing_chapter_prints_two_lines_and_keeps_the_failed_notebook(sandbox, monkeypatch):
    """An error inside the kernel: one line with the chapter and the error, one with the path of
    the executed notebook that holds the full traceback; the previous copy and results stay, and
    what the kernel writes to its own stderr stays off the terminal."""
    out = _chapter_root(sandbox, monkeypatch, FAILING)
    before, logs = _snapshot(sandbox), _kernel_logs()
    proc = _run("run", "01", "--profile", "smoke")
    assert proc.returncode == 1
    errors = proc.stderr.strip().splitlines()
    assert errors == ["[esae] 01_groups (smoke) failed: ValueError: n_samples must be an int >= 10**9, got 150",
                      "[esae] full traceback in book/chapters/failed/01_groups.ipynb"], proc.stderr
    assert "Traceback" not in proc.stdout and "noise" not in proc.stdout
    failed = out / "failed" / "01_groups.ipynb"
    assert "n_samples must be an int" in failed.read_text()
    after = _snapshot(sandbox)
    assert after.pop("root/book/chapters/failed/01_groups.ipynb")
    assert after == before
    assert _kernel_logs() <= logs  # the kernel's stderr file is removed


@pytest.mark.slow
def test_dead_kernel_prints_two_lines_naming_the_cell_and_the_signal(sandbox, monkeypatch):
    """The kernel killed mid-cell (as the out-of-memory killer does): one line with the chapter,
    the signal and the cell, one with what was kept; no traceback, the previous copy and results stay."""
    out = _chapter_root(sandbox, monkeypatch, DYING)
    before, logs = _snapshot(sandbox), _kernel_logs()
    proc = _run("run", "01", "--profile", "smoke")
    assert proc.returncode == 1
    errors = proc.stderr.strip().splitlines()
    assert errors == ["[esae] 01_groups (smoke) failed: the kernel died: killed by signal 9 (SIGKILL, what the "
                      "out-of-memory killer sends) while running cell 4 of 4",
                      "[esae] the cells it ran in book/chapters/failed/01_groups.ipynb; what the kernel last "
                      "wrote in book/chapters/failed/01_groups.kernel.log"], proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    log = out / "failed" / "01_groups.kernel.log"
    assert "noise from outside the notebook" in log.read_text()
    after = _snapshot(sandbox)
    assert after.pop("root/book/chapters/failed/01_groups.ipynb")
    assert after.pop("root/book/chapters/failed/01_groups.kernel.log")
    assert after == before
    assert _kernel_logs() <= logs


@pytest.mark.parametrize("param, allowed", [("sae_dtype", "'auto', 'float32', 'bfloat16'"),
                                            ("loss_head_dtype", "'auto', 'float32', 'bfloat16', 'int8'")])
def test_chapter_7_matmul_dtypes_are_refused_by_name(sandbox, param, allowed):
    _edit(sandbox, "07_sae_match:\n", f"07_sae_match:\n  {param}: half\n")
    line = _refused(sandbox, "run", "07")
    assert f"07_sae_match: {param} must be one of {allowed}, got 'half'" in line, line


def test_chapter_6b_base_models_are_refused_by_name(sandbox):
    _edit(sandbox, "  base_models: [mlp, cnn]\n", "  base_models: [mlp, rnn]\n")
    line = _refused(sandbox, "run", "06b")
    assert "06b_beyond: each entry of base_models must be one of 'mlp', 'cnn', got 'rnn'" in line, line
