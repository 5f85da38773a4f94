import pytest

from esae import results, summary


@pytest.fixture
def tmp_results(tmp_path, monkeypatch):
    monkeypatch.setenv("ESAE_RESULTS", str(tmp_path))
    return tmp_path


def test_missing_chapters_are_reported_not_run(tmp_results):
    rows = summary.claims("smoke")
    assert rows and all(r.verdict == "not run" for r in rows)
    assert "not run" in summary.claims_markdown(rows)


def test_claims_read_the_result_files(tmp_results):
    results.write_results("smoke", "04_fitting_m", {
        "r2_fitted": {"mlp": 0.99, "cnn": 0.97}, "r2_identity": {"mlp": 0.5, "cnn": 0.05},
        "r2_constrained": {"mlp": 0.9, "cnn": 0.9}, "m4_minus_identity": {"mlp": 0.1, "cnn": 0.1}})
    rows = {r.claim: r for r in summary.claims("smoke")}
    fitted = rows["one matrix M explains the rotated activations (held-out R²)"]
    assert fitted.verdict == "differs" and "CNN 0.970" in fitted.ours  # one model below 0.98
    assert rows["baseline M = I, MLP (R²)"].verdict == "agrees"


def test_timings_table(tmp_results):
    results.write_results("smoke", "timings", {"chapters": {"01_groups": 30.0, "02_dataset": 90.0},
                                                "machine": {"cpu": "x", "cpus": 2}})
    text = summary.timings_markdown("smoke")
    assert "2.0 min" in text and "01_groups" in text


def test_readme_table_is_replaced_between_markers(tmp_results, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- summary:start -->\nold table\n<!-- summary:end -->\nafter\n")
    summary.main(["--profile", "smoke", "--readme", str(readme)])
    text = readme.read_text()
    assert text.startswith("intro\n<!-- summary:start -->") and text.endswith("<!-- summary:end -->\nafter\n")
    assert "old table" not in text and "| source | claim |" in text and "not run" in text
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="summary:start"):
        summary.update_readme("smoke", readme)
