"""The summary's SAE Match rows: recomputed from chapter 7's result file, each verdict naming what it compares."""

import pytest

from esae import results, summary


@pytest.fixture
def tmp_results(tmp_path, monkeypatch):
    monkeypatch.setenv("ESAE_RESULTS", str(tmp_path))
    return tmp_path


def mse(vanilla: float, unfolded: float, folded: float) -> dict:
    return {"vanilla": dict.fromkeys(("W_dec", "W_enc", "b_enc", "all"), vanilla),
            "unfolded": dict.fromkeys(("W_dec", "W_enc", "b_enc", "all"), unfolded),
            "folded": dict.fromkeys(("W_dec", "W_enc", "b_enc", "all"), folded)}


PAIRS = [f"{t}-{t + 1}" for t in range(8)]


def per_pair_ev(fair_gap: float = 0.0) -> dict:
    """EV per pair: folded 0.3 against the paper's baseline at -0.05 on every pair, and against the
    decoder-only one 0.31 + ``fair_gap`` on five pairs and 0.29 on three (0: mixed, on par)."""
    return {p: {"folded/folded": 0.2, "folded/original": 0.3, "unfolded/original": -0.05,
                "unfolded_decoder/original": (0.31 if i < 5 else 0.29) + fair_gap,
                "own": 0.9, "previous": 0.1, "layer_drop": 0.5} for i, p in enumerate(PAIRS)}


def per_pair_dl(fair_gap: float = 0.0) -> dict:
    ci = lambda m: {"mean": m, "ci": [m - 0.1, m + 0.1]}  # noqa: E731
    return {p: {"own": ci(0.2), "folded": ci(1.0), "unfolded": ci(3.0),
                "unfolded_decoder": ci((0.9 if i < 5 else 1.1) - fair_gap)} for i, p in enumerate(PAIRS)}


def chapter7(**changes) -> dict:
    shares = {"W_dec": 0.01, "W_enc": 0.01, "b_enc": 0.98}
    ev = per_pair_ev()
    out = {
        "model": "tiny",
        "weight_mse": {"0-1": mse(3.0, 2.0, 1.0), "1-2": mse(3.0, 0.5, 1.0)},
        "cost_share": {p: {"unfolded": shares, "folded": {"W_dec": 0.99, "W_enc": 0.005, "b_enc": 0.005}}
                       for p in ("0-1", "1-2")},
        "decoding": "original",
        "explained_variance": ev,
        "method_medians": {"folded": {"agreement": 0.3, "cofire": 0.2, "ev": 0.3, "delta_loss": 1.0},
                           "unfolded": {"agreement": 0.01, "cofire": 0.05, "ev": -0.05, "delta_loss": 3.0},
                           "unfolded_decoder": {"agreement": 0.3, "cofire": 0.21, "ev": 0.31, "delta_loss": 0.9},
                           "data_based": {"agreement": 1.0, "cofire": 0.4, "ev": 0.4, "delta_loss": 0.8}},
        "delta_loss": per_pair_dl(),
        "delta_loss_tokens": 4158,
        "matching_score": {"folded": 0.2, "unfolded": 0.05, "unfolded_decoder": 0.21, "random": 0.04},
        "persistence": {"1": {"agreement": 1.0, "cofire_composed": 0.3, "cofire_direct": 0.3, "cofire_chance": 0.04},
                        "5": {"agreement": 0.1, "cofire_composed": 0.05, "cofire_direct": 0.1, "cofire_chance": 0.04}},
        "pruning": {"1": {"encode_permute_decode": 0.5, "layer_drop": 1.0},
                    "2": {"encode_permute_decode": 2.0, "layer_drop": 1.0}},
        "sae_quality": {"0": {"explained_variance": 0.8, "l0": 40.0, "dead_fraction": 0.01}},
        "ground_truth_recovery": {"folded": 1.0, "unfolded": 0.8},
        "figure2_recovery": {"folded, all weights": 1.0, "unfolded, all weights": 0.1, "unfolded, decoder only": 1.0},
    }
    out.update(changes)
    return out


def rows_by_start(profile: str = "smoke") -> dict:
    return {r["id"]: r for r in summary.claims(profile) if r["chapter"] == "07_sae_match"}


def find(rows: dict, start: str):
    return rows[start]


def test_each_sae_match_verdict_says_what_it_compares(tmp_results):
    results.write_results("smoke", "07_sae_match", chapter7())
    rows = rows_by_start()
    order = rows["match-weight-mse"]
    assert order["verdict"] == "differs" and "W_dec 1 of 2" in order["this_run"] and "W_dec" in order["test"]
    paper = rows["match-folding-paper-baseline"]
    assert paper["verdict"] == "agrees" and "EV 0.300 vs -0.050" in paper["this_run"] and "sign test" in paper["test"]
    assert "ΔL folded better on 8 of 8 pairs, worse on 0 (sign test p = 0.0078)" in paper["this_run"]
    fair = rows["match-folding-fair-baseline"]  # folded better on 3 pairs, worse on 5: on par, as the paper's ablation
    assert fair["verdict"] == "agrees" and "EV 0.300 vs 0.310" in fair["this_run"]
    assert "EV folded better on 3 of 8 pairs, worse on 5" in fair["this_run"]
    assert "b_enc 98.0%" in rows["match-cost-share"]["this_run"]
    pers = rows["match-persistence"]
    assert pers["verdict"] == "differs" and "composed ×1.2, direct ×2.5" in pers["this_run"]
    assert "original SAEs 0.300" in rows["match-decoding"]["this_run"]
    assert "4158 predictions per pair" in rows["match-delta-loss-text"]["this_run"]
    assert rows["match-figure2"]["verdict"] == "agrees"
    assert all(r["test"] for r in rows.values())


def test_fair_baseline_differs_when_folding_wins_on_every_pair(tmp_results):
    results.write_results("smoke", "07_sae_match", chapter7(explained_variance=per_pair_ev(-0.05),
                                                            delta_loss=per_pair_dl(-0.5)))
    fair = rows_by_start()["match-folding-fair-baseline"]
    assert fair["verdict"] == "differs" and "EV folded better on 8 of 8 pairs" in fair["this_run"]


def test_too_few_pairs_for_a_sign_test_only_report(tmp_results):
    few = lambda d: {p: d[p] for p in PAIRS[:3]}  # noqa: E731
    results.write_results("smoke", "07_sae_match", chapter7(explained_variance=few(per_pair_ev()),
                                                            delta_loss=few(per_pair_dl())))
    rows = rows_by_start()
    assert rows["match-folding-paper-baseline"]["verdict"] == "reported"
    assert rows["match-folding-fair-baseline"]["verdict"] == "reported"


def test_persistence_agrees_only_when_both_routes_beat_chance(tmp_results):
    pers = {"5": {"agreement": 0.5, "cofire_composed": 0.2, "cofire_direct": 0.3, "cofire_chance": 0.04}}
    results.write_results("smoke", "07_sae_match", chapter7(persistence=pers))
    assert rows_by_start()["match-persistence"]["verdict"] == "agrees"


def test_old_result_layout_is_reported_unreadable(tmp_results):
    results.write_results("smoke", "07_sae_match", {"model": "tiny", "mse": {"0-1": {"folded": 1.0}}})
    row = next(r for r in summary.claims("smoke") if r["chapter"] == "07_sae_match")
    assert row["verdict"] == "not run" and "unreadable" in row["this_run"]


def test_no_pipe_breaks_a_table_row(tmp_results):
    results.write_results("smoke", "07_sae_match", chapter7())
    text = summary.claims_markdown("smoke")
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows and all(line.replace("\\|", "").count("|") == 7 for line in rows)


def test_pruning_row_splits_the_blocks_at_the_papers_depth(tmp_results):
    prune = {str(b): {"encode_permute_decode": 3.0 if b < 7 else 0.5, "layer_drop": 1.0} for b in range(1, 18)}
    results.write_results("smoke", "07_sae_match", chapter7(pruning=prune))
    row = rows_by_start()["match-pruning"]
    # 18 blocks: layer 10 of Gemma 2 2B's 26 is block 7 here
    assert "blocks ≥ 7 (layer 10 of 26 at this depth) median 0.500 against 3.000 before (11 and 6 blocks)" in row["this_run"]
    assert row["verdict"] == "agrees" and "11 of 11 later ones" in row["this_run"]
    worse = {b: {**v, "layer_drop": 0.1} for b, v in prune.items()}  # later blocks better, but never below a drop
    results.write_results("smoke", "07_sae_match", chapter7(pruning=worse))
    assert rows_by_start()["match-pruning"]["verdict"] == "partly"
    flat = {b: {"encode_permute_decode": 2.0, "layer_drop": 0.1} for b in prune}
    results.write_results("smoke", "07_sae_match", chapter7(pruning=flat))
    assert rows_by_start()["match-pruning"]["verdict"] == "differs"


def test_compare_over_pairs_is_a_paired_sign_test():
    from esae.match_evaluation import compare_over_pairs

    a = {f"{t}-{t + 1}": 1.0 for t in range(10)}
    b = {p: 0.5 for p in a}
    out = compare_over_pairs(a, b)
    assert (out["wins"], out["losses"], out["n"], out["better"], out["decidable"]) == (10, 0, 10, "a", True)
    assert out["p_value"] == pytest.approx(2 * 0.5 ** 10)
    assert compare_over_pairs(a, b, lower_is_better=True)["better"] == "b"
    mixed = {p: (1.5 if i % 2 else 0.5) for i, p in enumerate(a)}
    assert compare_over_pairs(mixed, b | {p: 1.0 for p in list(b)[:1]})["better"] is None
    few = compare_over_pairs({"0-1": 2.0, "1-2": 2.0}, {"0-1": 1.0, "1-2": 1.0})
    assert few["better"] is None and not few["decidable"]
    assert compare_over_pairs(a, {"0-1": 0.0, "x": 3.0})["n"] == 1  # only the shared pairs
    with pytest.raises(ValueError, match="share no layer pair"):
        compare_over_pairs(a, {"x": 1.0})
    with pytest.raises(ValueError, match="alpha"):
        compare_over_pairs(a, b, alpha=0.0)
