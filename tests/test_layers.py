"""Three layers: science modules never import the book's parameters, profiles, cache, results or
pipeline (issue 14); imports point downwards only (book -> pipeline -> science)."""

import ast
import subprocess
import sys

import pytest

from esae.runtime import repo_root

SCIENCE = ("assignment", "autoencoders", "beyond", "checks", "digits", "equivariance", "groups", "jumprelu",
           "language_models", "lm_loss", "match_evaluation", "match_ground_truth", "metrics", "orbits", "probing", "sae_match",
           "sae_evaluation", "sae_kernels", "sae_probing", "sae_stack", "sae_training", "saes", "shapes")
BOOK_AND_PIPELINE = ("params", "cache", "results", "book", "pipeline", "summary", "browser_check", "export",
                     "verdicts", "figures")
NEUTRAL = ("__init__", "__main__", "runtime", "plots", "temporaries")


def test_every_module_has_a_layer():
    """A new module is placed in a layer on purpose (and then checked by the tests below)."""
    modules = {p.stem for p in (repo_root() / "esae").glob("*.py")}
    assert modules - set(SCIENCE + BOOK_AND_PIPELINE + NEUTRAL) == set()


def _imported(path) -> set[str]:
    """Every esae module a source file imports, at its top or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("esae"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("esae"):
            out.add(node.module)
            if node.module == "esae":  # from esae import cache
                out.update(f"esae.{a.name}" for a in node.names)
    return out


@pytest.mark.parametrize("module", SCIENCE)
def test_science_module_imports_no_book_or_pipeline_module(module):
    imported = _imported(repo_root() / "esae" / f"{module}.py")
    bad = sorted(m for m in imported if m.count(".") and m.split(".")[1] in BOOK_AND_PIPELINE)
    assert bad == [], f"esae.{module} imports {bad}"


def test_science_layer_loads_no_book_or_pipeline_module():
    """In a fresh interpreter, importing every science module loads none of the book's modules."""
    code = (f"import sys, importlib\nfor m in {SCIENCE!r}: importlib.import_module('esae.' + m)\n"
            f"print(','.join(m for m in {BOOK_AND_PIPELINE!r} if 'esae.' + m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"the science modules loaded esae.{out}"


def test_pipeline_reads_no_profile():
    """The pipeline turns configs into artifacts; profiles are the book's."""
    imported = _imported(repo_root() / "esae" / "pipeline.py")
    assert not {"esae.params", "esae.book", "esae.results", "esae.summary"} & imported


def test_without_a_store_science_functions_compute_every_time():
    from esae.runtime import NO_STORE, store_or_none

    calls = []
    assert store_or_none(None) is NO_STORE
    for _ in range(2):
        assert NO_STORE.cached_torch("k", {"a": 1}, lambda: calls.append(1) or 5) == 5
    assert calls == [1, 1] and not NO_STORE.is_cached("k", {"a": 1})
    folder = NO_STORE.cached_dir("k", {}, lambda tmp: (tmp / "x").write_text("y"))
    assert (folder / "x").read_text() == "y"
