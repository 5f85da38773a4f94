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
    fitted = next(r for c, r in rows.items() if c.startswith("one matrix M explains the rotated activations"))
    assert fitted.verdict == "differs" and "CNN 0.970" in fitted.ours  # one model below 0.98
    assert next(r for c, r in rows.items() if c.startswith("baseline M = I, MLP")).verdict == "agrees"


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


def test_probing_rows_use_xgboost_claims_as_stated(tmp_results):
    claims = [{"panel": "cnn/L32", "claim": 1, "statement": "", "holds_xgboost": False, "measured": "",
               "holds_best_of_three": True},
              {"panel": "mlp/L8", "claim": 1, "statement": "", "holds_xgboost": True, "measured": "",
               "holds_best_of_three": True},
              {"panel": "cnn/L32", "claim": 2, "statement": "", "holds_xgboost": True, "measured": "",
               "holds_best_of_three": False}]
    results.write_results("smoke", "06_probing", {
        "claims": claims, "sweep_claims": {"cnn/L1": {"1": True}, "cnn/L32": {"1": False}, "mlp/L1": {"1": False}},
        "cnn/activations/L32": {"xgboost": {"all": 0.9}, "best_of_three": {"all": 0.95}}})
    results.write_results("smoke", "05_equivariant_sae", {
        f"{m}/{s}/k{k}": {"l1": l1, "spliced_mse": 1.0} for m in ("mlp", "cnn") for s, l1s in
        (("two_layer", (1.0, 2.0, 4.0)), ("equivariant", (2.0, 2.5, 3.0)), ("regular", (1, 1, 1)), ("invariant", (2, 2.5, 3)))
        for k, l1 in zip((8, 16, 32), l1s)})
    rows = {r.claim: r for r in summary.claims("smoke")}
    outperform = next(r for c, r in rows.items() if c.startswith("outperforms regular and wide"))
    assert outperform.verdict == "differs" and "1 of 2 panels" in outperform.ours and "best-of-three: 2 of 2" in outperform.ours
    assert next(r for c, r in rows.items() if c.startswith("matched by the two-layer")).verdict == "agrees"
    sweep = next(r for c, r in rows.items() if c.startswith("truncation sweep"))
    assert "CNN: 1" in sweep.ours and "MLP: none" in sweep.ours
    # claim (c) of RESULT 3 is the range max - min, per model: 1.0 < 3.0
    rng = next(r for c, r in rows.items() if "range of L1" in c and "CNN" in c)
    assert rng.verdict == "agrees" and "equivariant 1.00, two-layer 3.00" in rng.ours
