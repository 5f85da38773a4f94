"""Shared fixtures: a copy of the book executed under the smoke profile and built once per session."""

import shutil

import pytest

from esae import book
from esae.runtime import repo_root

ROOT = repo_root()


@pytest.fixture(scope="session")
def workspace(tmp_path_factory):
    """A copy of the book's sources with its own cache and results, so tests never touch the
    developer's executed chapters, cache or results."""
    tmp = tmp_path_factory.mktemp("book")
    for name in ("_config.yml", "_toc.yml", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp / name)
    shutil.copytree(ROOT / "book", tmp / "book", ignore=shutil.ignore_patterns("*.ipynb"))
    mp = pytest.MonkeyPatch()
    mp.setenv("ESAE_CACHE", str(tmp / "cache"))
    mp.setenv("ESAE_RESULTS", str(tmp / "results"))
    yield tmp
    mp.undo()


@pytest.fixture(scope="session")
def smoke_book(workspace):
    """Execute every chapter under smoke into the workspace and build the HTML; return
    ``(workspace, runs)``."""
    out_dir = workspace / "book" / "chapters"
    runs = [book.execute_chapter(stem, "smoke", out_dir=out_dir, root=ROOT, force=True) for stem in book.chapters()]
    book.build_html(workspace)
    return workspace, runs
