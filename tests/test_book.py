"""Every chapter executes under the smoke profile, and the book builds from the executed copies."""

import nbformat
import papermill
import pytest

from esae import book
from esae.runtime import repo_root

ROOT = repo_root()


def test_every_chapter_is_in_the_toc():
    toc = (ROOT / "_toc.yml").read_text()
    stems = book.chapters()
    assert stems == ["01_groups", "02_dataset", "03_base_models", "04_fitting_m",
                     "05_equivariant_sae", "06_probing", "06b_beyond", "07_sae_match", "07b_your_model", "08_summary"]
    for stem in stems:
        assert f"book/chapters/{stem}" in toc


@pytest.mark.slow
def test_chapters_execute_under_smoke_and_book_builds(smoke_book):
    workspace, runs = smoke_book
    for run in runs:
        nb = nbformat.read(run.output, as_version=4)
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert injected and "hide-cell" in injected[0].metadata.tags
        assert nb.metadata["esae"]["profile"] == "smoke"
    assert (workspace / "_build" / "html" / "index.html").is_file()
    page = (workspace / "_build" / "html" / "book" / "chapters" / "01_groups.html").read_text()
    assert "_static/mathjax/tex-chtml.js" in page


def test_unchanged_chapter_is_not_executed_again_unless_its_results_are_gone(workspace):
    from esae.results import results_dir

    out_dir = workspace / "again"
    first = book.execute_chapter("01", "smoke", out_dir=out_dir, root=ROOT)
    second = book.execute_chapter("01", "smoke", out_dir=out_dir, root=ROOT)
    assert second.skipped and not first.skipped
    result = results_dir("smoke") / "01_groups.json"
    kept = result.read_bytes()
    result.unlink()  # ESAE_RESULTS pointing elsewhere, or results/ deleted
    third = book.execute_chapter("01", "smoke", out_dir=out_dir, root=ROOT)
    assert not third.skipped and result.read_bytes() == kept


def test_a_page_between_chapters_resolves_by_number_and_letter():
    assert book.resolve_chapter("07b") == "07b_your_model" and book.resolve_chapter("07") == "07_sae_match"


def test_unknown_chapter_is_refused():
    with pytest.raises(ValueError, match="chapter must be one of"):
        book.resolve_chapter("99")


def test_stamp_follows_earlier_results_and_timings(tmp_path, monkeypatch):
    from esae import results

    monkeypatch.setenv("ESAE_RESULTS", str(tmp_path))

    def stamps():
        return {s: book._stamp(ROOT, s, {}, "smoke") for s in ("01_groups", "06_probing", "08_summary")}

    first = stamps()
    results.write_results("smoke", "05_equivariant_sae", {"x": 1})
    second = stamps()
    assert second["01_groups"] == first["01_groups"]  # a later chapter's results do not matter
    assert second["06_probing"] != first["06_probing"] and second["08_summary"] != first["08_summary"]
    results.write_results("smoke", "timings", {"chapters": {"08_summary": 3.0}})
    assert stamps() == second  # the summary's own wall time does not re-trigger it
    results.write_results("smoke", "timings", {"chapters": {"08_summary": 3.0, "03_base_models": 60.0}})
    third = stamps()
    assert third["08_summary"] != second["08_summary"] and third["06_probing"] == second["06_probing"]


@pytest.mark.parametrize("profile", ["smoke", "default", "paper"])
def test_every_profile_sets_only_declared_parameters_of_the_right_type(profile, tmp_path):
    """The profiles that CI never executes (default, paper) must not rot: every key a profile sets
    is declared by the chapter, with a value of the declared type, and passes the runner's rules;
    the runner's reading of the parameters cell agrees with papermill's."""
    from esae import params

    import jupytext

    kinds = {"int": int, "float": (int, float), "str": str, "list": list, "bool": bool, "dict": dict}
    for stem in book.chapters():
        ipynb = tmp_path / f"{stem}.ipynb"
        jupytext.write(jupytext.read(ROOT / "notebooks" / f"{stem}.py"), ipynb)
        declared = papermill.inspect_notebook(str(ipynb))
        ours = params.declared_parameters(stem)
        assert list(ours) == list(declared)
        assert all(ours[k].type == declared[k]["inferred_type_name"] for k in ours)
        params.resolved_parameters(stem, profile)  # raises on any rule a profile breaks
        for key, value in params.chapter_parameters(stem, profile).items():
            assert key in declared, f"params/{profile}.yaml sets {key} for {stem}, which it does not declare"
            kind = declared[key]["inferred_type_name"]
            if kind in kinds:
                assert isinstance(value, kinds[kind]), f"{profile}/{stem}.{key} = {value!r} is not {kind}"


def test_profile_configs_validate():
    """Every profile's parameters build valid stage configs (what chapters 3-5 build)."""
    from esae import params, pipeline

    for profile in ("smoke", "default", "paper"):
        upstream = params.resolved_parameters("06_probing", profile)["upstream"]
        layout = pipeline.dataset_layout(upstream["02_dataset"])
        assert set(pipeline.base_model_configs(upstream["03_base_models"], layout)) == {"mlp", "cnn"}
        assert set(pipeline.fit_configs(upstream["04_fitting_m"])) == {"paper", "warm_start", "penalty", "exact"}
        assert pipeline.sae_configs(upstream["05_equivariant_sae"], layout)
