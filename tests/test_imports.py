"""Light imports: a science module costs what it needs (issue 17, item 6)."""

import subprocess
import sys

import pytest

HEAVY = ("matplotlib", "sae_lens", "sklearn", "xgboost", "transformers", "papermill")


@pytest.mark.parametrize("module", ["esae", "esae.groups", "esae.equivariance", "esae.metrics"])
def test_science_import_loads_no_heavy_library(module):
    code = f"import sys, {module}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"import {module} loaded {out}"


def test_submodules_resolve_lazily():
    import esae

    assert esae.plots.__name__ == "esae.plots"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        esae.nope  # noqa: B018
