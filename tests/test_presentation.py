"""The book as its readers read it: verdicts from one source, closing text generated from the run,
one parameters fold, captioned figures."""

import json
import re

import jupytext
import nbformat
import pytest

from esae import book, figures, verdicts
from esae.results import results_dir
from esae.runtime import repo_root

ROOT = repo_root()
CLOSING = "## What this run showed"


def _closing_cells(stem: str) -> list:
    """The cells of a chapter's closing section ("What this run showed" up to the next ``## ``)."""
    cells = jupytext.read(ROOT / "notebooks" / f"{stem}.py").cells
    out, inside = [], False
    for cell in cells:
        if cell.cell_type == "markdown":
            lines = cell.source.splitlines()
            for line in lines:
                if line.startswith("## "):
                    inside = line.startswith(CLOSING)
        if inside:
            out.append(cell)
    return out


def _numbers(value) -> set[str]:
    """Every number in a result file, as it could be printed (3 significant digits or more)."""
    found = set()
    if isinstance(value, dict):
        for v in value.values():
            found |= _numbers(v)
    elif isinstance(value, list):
        for v in value:
            found |= _numbers(v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        for fmt in ("{:.3f}", "{:.4f}", "{:.2f}", "{:.0f}", "{:,.0f}", "{:.1%}", "{:.0%}"):
            text = fmt.format(value)
            if len(re.sub(r"\D", "", text).lstrip("0")) >= 3:
                found.add(text)
    return found


CHAPTERS = [s for s in book.chapters() if not s.endswith("_summary")]


@pytest.mark.parametrize("stem", CHAPTERS)
def test_closing_section_code_is_hidden_and_its_text_has_no_literal_run_numbers(stem, tmp_path):
    cells = _closing_cells(stem)
    assert cells, f"{stem} has no '{CLOSING}' section"
    for cell in cells:
        if cell.cell_type == "code":
            assert "remove-input" in cell.metadata.get("tags", []), f"{stem}: closing code cell shown:\n{cell.source[:200]}"
    text = "\n".join(c.source for c in cells if c.cell_type == "markdown")
    text = re.sub(r"\$[^$]*\$|`[^`]*`", "", text)  # math and code name no run numbers
    for profile in ("smoke", "default"):
        path = results_dir(profile) / f"{stem}.json"
        if path.is_file():
            typed = [n for n in _numbers(json.loads(path.read_text())) if re.search(rf"(?<![\d.,]){re.escape(n)}(?![\d%])", text)]
            assert not typed, f"{stem}: closing text types numbers of the {profile} run: {typed}"


@pytest.mark.slow
def test_each_chapter_conclusion_and_the_summary_agree_on_every_claim(smoke_book):
    workspace, _ = smoke_book
    out = workspace / "book" / "chapters"

    def shown(stem: str) -> str:
        nb = nbformat.read(out / f"{stem}.ipynb", as_version=4)
        return "\n".join(o.get("data", {}).get("text/markdown", "") for c in nb.cells if c.cell_type == "code"
                         for o in c.get("outputs", []))

    summary_page = shown("08_summary")
    judged = 0
    for stem in CHAPTERS:
        path = results_dir("smoke") / f"{stem}.json"
        written = json.loads(path.read_text()).get("verdicts", []) if path.is_file() else []
        if stem in verdicts.CHAPTERS:
            assert written, f"{stem} wrote no verdicts"
        chapter_page = shown(stem)
        for row in verdicts.markdown(written).splitlines()[2:]:
            assert row in chapter_page, f"{stem}'s conclusion lacks: {row}"
            assert row in summary_page, f"the summary lacks {stem}'s: {row}"
            judged += 1
    assert judged >= 10


@pytest.mark.slow
def test_one_parameters_fold_labelled_with_the_profile(smoke_book):
    workspace, runs = smoke_book
    for run in runs:
        nb = nbformat.read(run.output, as_version=4)
        defaults = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert all("remove-cell" in c.metadata.tags for c in defaults)
        assert len(injected) == 1 and "hide-cell" in injected[0].metadata.tags
        assert injected[0].metadata.mystnb["code_prompt_show"] == "Parameters of this page (profile smoke)"
        assert "profile = " in injected[0].source and "  # " in injected[0].source  # the defaults' comments


@pytest.mark.slow
def test_every_chapter_figure_is_glued_with_a_caption(smoke_book):
    workspace, runs = smoke_book
    for run in runs:
        nb = nbformat.read(run.output, as_version=4)
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
        loose = [o for o in outputs if "image/png" in o.get("data", {}) and "scrapbook" not in o.get("metadata", {})]
        assert not loose, f"{run.stem}: {len(loose)} figures without a caption"
        names = {o["metadata"]["scrapbook"]["name"] for o in outputs if "scrapbook" in o.get("metadata", {})}
        placed = "\n".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
        assert all(f"{{glue:figure}} {n}" in placed for n in names)


def test_figure_names_and_folds_are_checked(monkeypatch):
    import matplotlib.pyplot as plt

    fig = plt.figure()
    with pytest.raises(ValueError, match="fig-05-frontier"):
        figures.show(fig, "Frontier", "caption")
    plt.close(fig)
    monkeypatch.setenv("ESAE_BOOK", "1")
    assert figures.folded("Numbers", "| a |\n|---|\n| 1 |").startswith("````{dropdown} Numbers")
    monkeypatch.setenv("ESAE_BOOK", "0")
    assert figures.folded("Numbers", "x").startswith("**Numbers**")


def test_fold_parameters_keeps_one_fold_with_the_defaults_comments():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("ks: list = [8, 16]  # TopK values\nseed: int = 0  # the seed",
                                          metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("# Parameters\nks = [8]\nseed = 3\n", metadata={"tags": ["injected-parameters"]})]
    book.fold_parameters(nb, "smoke")
    defaults, injected = nb.cells
    assert "remove-cell" in defaults.metadata.tags and "hide-cell" in injected.metadata.tags
    assert injected.source.splitlines()[1:] == ["ks = [8]  # TopK values", "seed = 3  # the seed"]
    assert injected.metadata.mystnb["code_prompt_show"] == "Parameters of this page (profile smoke)"


def test_repository_url_reaches_the_config_only_when_given(tmp_path):
    import yaml

    (tmp_path / "_config.yml").write_text("title: t\nhtml:\n  use_repository_button: false\n")
    path = book.repository_config(tmp_path, "https://github.com/someone/esae/", tmp_path / "_build")
    config = yaml.safe_load(path.read_text())
    assert config["repository"]["url"] == "https://github.com/someone/esae"
    assert config["html"]["use_repository_button"] and config["html"]["use_issues_button"]
    with pytest.raises(ValueError, match="repository URL must start with https://"):
        book.repository_config(tmp_path, "github.com/someone/esae", tmp_path / "_build")
    assert "github" not in (ROOT / "_config.yml").read_text()  # no host in the committed config


def test_intro_facts_read_the_summary_profile_and_its_results(tmp_path, monkeypatch):
    from esae import results

    monkeypatch.setenv("ESAE_RESULTS", str(tmp_path / "results"))
    (tmp_path / "book" / "chapters").mkdir(parents=True)
    nb = nbformat.v4.new_notebook(metadata={"esae": {"profile": "smoke"}})
    nbformat.write(nb, tmp_path / "book" / "chapters" / "08_summary.ipynb")
    results.write_results("smoke", "03_base_models", {"test_mse": {"mlp": 0.01, "cnn": 0.02}})
    results.write_results("smoke", "timings", {"chapters": {"03_base_models": 60.0}, "machine": {}})
    text = book.write_intro_facts(tmp_path).read_text()
    assert "profile `smoke`" in text and "{doc}`summary <chapters/08_summary>`" in text
    assert "| 03_base_models | 1.0 min (60 s) |" in text
