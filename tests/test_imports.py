"""Light imports: a science module costs what it needs (issue 17, item 6)."""

import subprocess
import sys

import pytest

HEAVY = ("matplotlib", "sae_lens", "sklearn", "xgboost", "transformers", "papermill")


@pytest.mark.parametrize("module", ["esae", "esae.groups", "esae.equivariance", "esae.metrics", "esae.orbits"])
def test_science_import_loads_no_heavy_library(module):
    code = f"import sys, {module}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"import {module} loaded {out}"


def test_importtime_of_equivariance_shows_no_matplotlib():
    """The issue's check as a user runs it: ``python -X importtime -c "import esae.equivariance"``."""
    log = subprocess.run([sys.executable, "-X", "importtime", "-c", "import esae.equivariance"],
                         capture_output=True, text=True, check=True).stderr
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in log.splitlines() if "|" in line}
    assert "esae" in imported and "torch" in imported  # the log is what we think it is
    assert "matplotlib" not in imported and "sae_lens" not in imported


def test_submodules_resolve_lazily():
    import esae

    assert esae.plots.__name__ == "esae.plots"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        esae.nope  # noqa: B018
