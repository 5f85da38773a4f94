import pytest

from esae import results, summary, verdicts


@pytest.fixture
def tmp_results(tmp_path, monkeypatch):
    monkeypatch.setenv("ESAE_RESULTS", str(tmp_path))
    return tmp_path


def test_missing_chapters_are_reported_not_run(tmp_results):
    rows = summary.claims("smoke")
    assert rows and all(r["verdict"] == "not run" for r in rows)
    assert "Not run" in summary.claims_markdown("smoke")


def test_claims_read_the_result_files(tmp_results):
    results.write_results("smoke", "04_fitting_m", {
        "r2_fitted": {"mlp": 0.99, "cnn": 0.97}, "r2_identity": {"mlp": 0.5, "cnn": 0.05},
        "r2_constrained": {"mlp": 0.9, "cnn": 0.9}, "m4_minus_identity": {"mlp": 0.1, "cnn": 0.1}})
    rows = {r["id"]: r for r in summary.claims("smoke")}
    fitted = rows["result1-warm-start"]
    assert fitted["verdict"] == "differs" and "CNN 0.970" in fitted["this_run"]  # one model below 0.98
    assert "warm start" in fitted["claim"]  # which fit the verdict is about
    assert rows["result1-identity-mlp"]["verdict"] == "agrees"


def test_the_papers_recipe_is_judged_only_on_the_papers_schedule(tmp_results):
    base = {"r2_fitted": {"mlp": 0.99, "cnn": 0.99}, "r2_identity": {"mlp": 0.5, "cnn": 0.05},
            "r2_paper_recipe": {"mlp": 0.34, "cnn": 0.76}, "paper_recipe_epochs": 15}
    short = {v.id: v for v in verdicts.fitting_m(base)}["result1-paper-recipe"]
    assert short.verdict == "reported" and "not comparable" in short.this_run and "15 epochs" in short.claim
    full = {v.id: v for v in verdicts.fitting_m({**base, "paper_recipe_epochs": 150,
                                                 "r2_paper_recipe": {"mlp": 0.981, "cnn": 0.992}})}
    assert full["result1-paper-recipe"].verdict == "agrees"
    low = {v.id: v for v in verdicts.fitting_m({**base, "paper_recipe_epochs": 150})}
    assert low["result1-paper-recipe"].verdict == "differs"  # 150 epochs and still below 0.98


def test_timings_table(tmp_results):
    results.write_results("smoke", "timings", {"chapters": {"01_groups": 30.0, "02_dataset": 90.0},
                                                "machine": {"cpu": "x", "cpus": 2}})
    text = summary.timings_markdown("smoke")
    assert "2.0 min" in text and "01_groups" in text


def test_readme_table_is_replaced_between_markers(tmp_results, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- summary:start -->\nold table\n<!-- summary:end -->\nafter\n")
    results.write_results("smoke", "03_base_models", {"test_mse": {"mlp": 0.01, "cnn": 0.02}})
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
        (("two_layer", (1.0, 2.0, 4.0)), ("equivariant", (2.0, 2.5, 3.0)), ("regular", (1, 1, 1)),
                                               ("invariant", (2, 2.5, 3)), ("wide", (1, 1, 1)))
        for k, l1 in zip((8, 16, 32), l1s)})
    rows = {r["id"]: r for r in summary.claims("smoke")}
    outperform = rows["result2-1"]
    assert outperform["verdict"] == "partly"
    assert "1 of 2 panels" in outperform["this_run"] and "best of three probes: 2 of 2" in outperform["this_run"]
    assert rows["result2-2"]["verdict"] == "agrees"
    assert "CNN: 1" in rows["result2-sweep"]["this_run"] and "MLP: none" in rows["result2-sweep"]["this_run"]
    # claim (c) of RESULT 3 is the range max - min, per model: 1.0 < 3.0 on both
    rng = rows["result3-c"]
    assert rng["verdict"] == "agrees" and "CNN: equivariant 1.00, two-layer 3.00" in rng["this_run"]
    assert "range (max − min)" in rng["test"]


def test_summary_only_reads_the_verdicts_a_chapter_wrote(tmp_results):
    """A chapter unknown to esae.verdicts (a new one) appears under its own title with the list it wrote."""
    mine = [{"id": "x", "source": "§9", "claim": "jitter helps", "paper": "yes", "this_run": "0.5",
             "verdict": "within noise", "test": "difference vs seed spread"}]
    results.write_results("smoke", "06b_jitter", {"verdicts": mine})
    chapters = {c.stem: c for c in summary.chapters("smoke")}
    assert chapters["06b_jitter"].verdicts == mine and chapters["06b_jitter"].status == "ok"
    text = summary.claims_markdown("smoke")
    assert "### 6b. 06b_jitter" in text and "≈ within noise" in text
    assert summary.counts("smoke")["within noise"] == 1


def test_every_written_verdict_has_the_schema(tmp_results):
    results.write_results("smoke", "03_base_models", {"test_mse": {"mlp": 0.01, "cnn": 0.02}})
    (row,) = results.read_results("smoke", "03_base_models")["verdicts"]
    assert set(row) == {"id", "source", "claim", "paper", "this_run", "verdict", "test"}
    assert row["verdict"] in verdicts.VERDICTS and "MLP MSE 0.0100" in row["this_run"]
    with pytest.raises(ValueError, match="verdict must be one of"):
        verdicts.Verdict("a", "b", "c", "d", "e", "maybe", "f")


def test_fair_readings_of_result2_give_their_own_verdicts():
    fair = {"claim1": {"paper": {"mlp/L1": False}, "onehot_p": {"mlp/L1": False}, "estimated_p": {"mlp/L1": True}},
            "tie": 0.02, "leads": ["mlp/L1/k32/SPO", "mlp/L1/k32/S", "cnn/L1/k8/SPO"],
            "survive": {"onehot_p": {"kept": ["mlp/L1/k32/S"], "lost": ["mlp/L1/k32/SPO", "cnn/L1/k8/SPO"]},
                        "estimated_p": {"kept": ["mlp/L1/k32/SPO", "mlp/L1/k32/S", "cnn/L1/k8/SPO"], "lost": []}},
            "p_hat_accuracy": {"cnn/k32": 0.996}}
    rows = {v.id: v for v in verdicts.fair_probing(fair)}
    # p says nothing about an S label, so the S lead cannot test the reading: not counted
    assert rows["result2-fair-onehot_p"].verdict == "differs"
    assert ("0 of 2 leads > 0.02 on SO, SP, SPO survive; lost: SPO at mlp/L1/k32, cnn/L1/k8 (1 leads on S or all "
            "not counted)") in rows["result2-fair-onehot_p"].this_run
    kept_one = {**fair, "survive": {**fair["survive"], "onehot_p": {"kept": ["mlp/L1/k32/S", "cnn/L1/k8/SPO"],
                                                                     "lost": ["mlp/L1/k32/SPO"]}}}
    assert {v.id: v.verdict for v in verdicts.fair_probing(kept_one)}["result2-fair-onehot_p"] == "partly"
    # p̂ comes from the whole activation: it shows the activation carries p, reported only
    assert rows["result2-fair-estimated_p"].verdict == "reported" and "holds at mlp/L1" in rows["result2-fair-estimated_p"].this_run
    assert "99.6%" in rows["result2-fair-estimated_p"].this_run
    wrapped = verdicts.probing({"claims": [], "fair": fair})
    assert {v.id for v in wrapped} == {"result2-fair-onehot_p", "result2-fair-estimated_p"}
    leads = {(1, "equivariant"): ("differs", {"mean": -0.1, "std": 0.01, "se": 0.006, "n": 3}),
             (4, "invariant"): ("untested (1 seed)", {"mean": 0.1, "std": None, "se": None, "n": 1})}
    chapter_rows = verdicts.beyond_fair_rows("jitter", "onehot_p", leads)
    assert [r["verdict"] for r in chapter_rows] == ["differs", "reported"]
    groups = {"SO": {"verdict": "agrees", "mean": 0.1, "std": 0.01}, "SP": {"verdict": "differs", "mean": -0.1, "std": 0.01}}
    (row,) = verdicts.beyond_fair_rows("jitter", "onehot_p", {(4, "equivariant"): ("partly", {**leads[(1, "equivariant")][1],
                                                                                            "groups": groups})})
    assert row["verdict"] == "partly" and "(SO 0.100 ± 0.010 agrees, SP -0.100 ± 0.010 differs)" in row["this_run"]
    assert set(chapter_rows[0]) == {"id", "claim", "paper", "this_run", "verdict", "test"}
    assert chapter_rows[0]["id"] == "beyond/jitter/probe_fair/onehot_p/equivariant/L1"
    with pytest.raises(ValueError, match="reading must be one of onehot_p, estimated_p"):
        verdicts.beyond_fair_rows("jitter", "paper", leads)


def test_upper_bound_row_compares_every_sae_input_with_the_activations():
    base = {"cnn/activations/L32": {"xgboost": {"S": 0.90, "SO": 0.95, "all": 0.93}},
            "cnn/activations/L8": {"xgboost": {"S": 0.85, "SO": 0.90, "all": 0.88}}}
    below = {"cnn/latents/regular/k8/L32": {"xgboost": {"S": 0.91, "SO": 0.94, "all": 0.93}},
             "cnn/reconstructions/wide/k8/L32": {"xgboost": {"S": 0.89, "SO": 0.96, "all": 0.93}},
             "mlp/latents/regular/k8/L32": {"xgboost": {"S": 0.99, "SO": 0.99, "all": 0.99}}}  # another model
    row = {v.id: v for v in verdicts.probing({"claims": [], **base, **below})}["result2-upper-bound"]
    assert row.verdict == "agrees" and "+0.010 on S (latents/regular/k8)" in row.this_run
    above = {**below, "cnn/latents/two_layer/k8/L32": {"xgboost": {"S": 0.99, "SO": 0.95, "all": 0.97}}}
    row = {v.id: v for v in verdicts.probing({"claims": [], **base, **above})}["result2-upper-bound"]
    assert row.verdict == "differs" and "+0.090 on S (latents/two_layer/k8)" in row.this_run
