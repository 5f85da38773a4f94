"""The reproduction summary: one row per claim of the papers, read from ``results/<profile>/*.json``.

Every number on the summary page comes from the chapters' result files, so the page cannot drift
from the run. A claim whose chapter has not been run is listed as "not run".
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from statistics import median
from pathlib import Path
from typing import Any

from esae.results import read_results

MODELS = ("mlp", "cnn")
KS = (8, 16, 32)
SAES = ("regular", "wide", "two_layer", "equivariant")
GROUPS = ("S", "SO", "SP", "SPO", "all")


@dataclass
class Claim:
    """One row: where the claim comes from, what the paper says, what this run measured, and
    ``verdict`` in {"agrees", "differs", "reported", "not run"}."""

    source: str
    claim: str
    paper: str
    ours: str
    verdict: str


def _load(profile: str, stem: str) -> dict[str, Any] | None:
    try:
        return read_results(profile, stem)
    except FileNotFoundError:
        return None


def _verdict(ok: bool) -> str:
    return "agrees" if ok else "differs"


def _fraction(flags: list[bool]) -> str:
    return f"{sum(flags)} of {len(flags)}"


def _dataset_claims(r: dict[str, Any]) -> list[Claim]:
    counts = r["n_tasks"]
    expected = {"S": 8, "SO": 28, "SP": 32, "SPO": 112}
    shares = r["negative_share"]
    paper_share = {"S": (0.58, 0.58), "SO": (0.87, 0.89), "SP": (0.87, 0.89), "SPO": (0.97, 0.97)}
    share_ok = all(lo - 0.03 <= shares[g] <= hi + 0.03 for g, (lo, hi) in paper_share.items())
    return [
        Claim("App. C.1", "180 binary probing tasks", "8 S, 28 SO, 32 SP, 112 SPO",
              ", ".join(f"{counts[g]} {g}" for g in expected), _verdict(all(counts[g] == n for g, n in expected.items()))),
        Claim("App. C.1", f"share of negative examples per task group (layout {r.get('layout', 'independent')})",
              "~58% S; 87–89% SO, SP; 97% SPO",
              ", ".join(f"{shares[g]:.1%} {g}" for g in expected), _verdict(share_ok)),
    ] + ([Claim("§4", "dataset reading: shapes upright, orientations from rotating the image (8⁴ label sets)",
                "4,096 label sets", f"{r['upright_label_sets']:,} label sets ({r['upright_orbits']:,} orbits); "
                f"{r['coverage_of_unpooled_training_set']:.0%} seen by a training set of chapter 3's size",
                "reported")] if "upright_label_sets" in r else [])


def _base_model_claims(r: dict[str, Any]) -> list[Claim]:
    mse = r["test_mse"]
    return [Claim("App. C.2", "base autoencoders reconstruct held-out images", "(no number given)",
                  ", ".join(f"{m.upper()} MSE {mse[m]:.4f}" for m in MODELS if m in mse), "reported")]


def _m_claims(r: dict[str, Any]) -> list[Claim]:
    fitted, ident = r["r2_fitted"], r["r2_identity"]
    recipe = r.get("r2_paper_recipe", {})
    rows = [Claim("RESULT 1", "one matrix M explains the rotated activations (held-out R², mean over p = 1..3; "
                  "fit: Adam from the least-squares warm start)", "0.987 ± 0.001",
                  ", ".join(f"{m.upper()} {fitted[m]:.3f}" for m in MODELS),
                  _verdict(all(fitted[m] >= 0.98 for m in MODELS)))]
    if recipe:
        rows.append(Claim("RESULT 1", "…with the paper's recipe (Adam from M = I) at this profile's budget",
                          "0.987 ± 0.001", ", ".join(f"{m.upper()} {recipe[m]:.3f}" for m in MODELS),
                          _verdict(all(recipe[m] >= 0.98 for m in MODELS))))
    for m, (paper, tol) in {"cnn": (0.05, 0.08), "mlp": (0.49, 0.03)}.items():
        rows.append(Claim("RESULT 1", f"baseline M = I, {m.upper()} (R², pooled, mean over p = 1..3)", f"{paper:.2f} ± {tol:.2f}",
                          f"{ident[m]:.3f}", _verdict(abs(ident[m] - paper) <= max(3 * tol, 0.1))))
    if "r2_definitions_matching_paper" in r:
        match = r["r2_definitions_matching_paper"]
        rows.append(Claim("RESULT 1", "a definition of R² reproducing both baselines (chapter 4's table)",
                          "(not stated)", ", ".join(match) if match else "none of the candidates", "reported"))
    if "m4_minus_identity_on_span" in r:
        rows.append(Claim("beyond", "M is close to a representation of C4: ‖M⁴ − I‖/‖I‖ on the activations' span",
                          "(not measured)", ", ".join(f"{m.upper()} {r['m4_minus_identity_on_span'][m]:.3f}"
                                                      for m in MODELS), "reported"))
    if "r2_constrained" in r:
        rows.append(Claim("beyond", "fit constrained to M⁴ = I (held-out R²): penalised / exact",
                          "future work in the paper",
                          ", ".join(f"{m.upper()} {r.get('r2_penalty', {}).get(m, float('nan')):.3f} / "
                                    f"{r['r2_constrained'][m]:.3f}" for m in MODELS), "reported"))
    return rows


def _frontier_claims(r: dict[str, Any]) -> list[Claim]:
    def get(model: str, sae: str, k: int, key: str) -> float | None:
        entry = r.get(f"{model}/{sae}/k{k}")
        return None if entry is None else entry.get(key)

    improve = [get(m, "equivariant", k, "spliced_mse") < get(m, "invariant", k, "spliced_mse")
               for m in MODELS for k in KS if get(m, "equivariant", k, "spliced_mse") is not None
               and get(m, "invariant", k, "spliced_mse") is not None]
    sparser = [get(m, "regular", k, "l1") < get(m, "equivariant", k, "l1")
               for m in MODELS for k in KS if get(m, "regular", k, "l1") is not None
               and get(m, "equivariant", k, "l1") is not None]
    rows = [
        Claim("RESULT 3", "M improves reconstruction: spliced loss equivariant < invariant",
              "yes (Figure 4)", f"{_fraction(improve)} model × K", _verdict(bool(improve) and all(improve))),
        Claim("RESULT 3", "regular SAEs have sparser latents (L1 regular < equivariant)",
              "generally (Figure 4)", f"{_fraction(sparser)} model × K",
              _verdict(bool(sparser) and sum(sparser) >= len(sparser) / 2)),
    ]
    for m in MODELS:
        l1 = {s: [get(m, s, k, "l1") for k in KS] for s in ("two_layer", "equivariant")}
        if all(v is not None for vals in l1.values() for v in vals):
            spread = {s: max(v) - min(v) for s, v in l1.items()}
            rows.append(Claim("RESULT 3", f"invariance gives a smaller range of L1 values over K ({m.upper()}: max − min)",
                              "equivariant range smaller than two-layer",
                              f"equivariant {spread['equivariant']:.2f}, two-layer {spread['two_layer']:.2f}",
                              _verdict(spread["equivariant"] < spread["two_layer"])))
    return rows


def _probing_claims(r: dict[str, Any]) -> list[Claim]:
    def f1(model: str, kind: str, sae: str, k: int, length: int, group: str, probe: str = "xgboost") -> float | None:
        entry = r.get(f"{model}/{kind}/{sae}/k{k}/L{length}")
        if not isinstance(entry, dict):
            return None
        table = entry.get(probe)
        return None if not isinstance(table, dict) else table.get(group)

    rows = []
    claims = r.get("claims", [])
    statements = {1: "outperforms regular and wide SAEs on truncated reconstructions (XGBoost F1, every group and K)",
                  2: "matched by the two-layer SAE only at K = 32 (XGBoost F1, within 0.02, every group)",
                  3: "latents: equivariant SAE the best SAE on S tasks (XGBoost)",
                  4: "latents: equivariant SAE behind on SO, SP, SPO (XGBoost)"}
    for c, text in statements.items():
        found = [x for x in claims if x["claim"] == c and x["holds_xgboost"] is not None]
        if not found:
            continue
        held = [x["panel"] for x in found if x["holds_xgboost"]]
        best = [x["panel"] for x in found if x["holds_best_of_three"]]
        rows.append(Claim("RESULT 2", text, "Figure 3 (CNN, L = 32) and Figure 7 (MLP/CNN, L = 8; MLP, L = 32)",
                          f"holds in {len(held)} of {len(found)} panels ({', '.join(held) or 'none'}); best-of-three: "
                          f"{len(best)} of {len(found)}", _verdict(len(held) == len(found))))
    sweep = r.get("sweep_claims", {})
    if sweep:
        lead = {m: [key.split("/L")[1] for key, v in sweep.items() if key.startswith(m + "/") and v.get("1")] for m in MODELS}
        rows.append(Claim("RESULT 2", "truncation sweep L ∈ {1..32}: lengths at which claim 1 holds (XGBoost)",
                          "(the paper shows L = 8 and 32)",
                          "; ".join(f"{m.upper()}: {', '.join(v) or 'none'}" for m, v in lead.items()), "reported"))
    comp = r.get("layout_comparison", {})
    if comp:
        rows.append(Claim("§4", "claims 1–5 at Figure 3 under the upright vs independent reading",
                          "(upright is the paper's reading)",
                          "; ".join(f"{key}: " + "".join("✓" if v else ("✗" if v is False else "–") for v in verdicts.values())
                                    for key, verdicts in comp.items()), "reported"))
    act = [r.get(f"cnn/activations/L{length}", {}).get("xgboost", {}).get("all") for length in (8, 32)]
    if any(v is not None for v in act):
        rows.append(Claim("RESULT 2", "upper bound: XGBoost probes on the base activations (CNN, all tasks)", "(Figure 3)",
                          ", ".join(f"L={length}: {v:.3f}" for length, v in zip((8, 32), act) if v is not None), "reported"))
    return rows


def _match_claims(r: dict[str, Any]) -> list[Claim]:
    """SAE Match rows, each recomputed from ``results/<profile>/07_sae_match.json``; every
    verdict names what it compares."""
    model = r.get("model", "?")
    rows = []
    mse = r["weight_mse"]
    parts = ("W_dec", "W_enc", "b_enc")
    ordered = {p: [v["folded"][p] < v["unfolded"][p] < v["vanilla"][p] for v in mse.values()] for p in parts}
    rows.append(Claim("SAE Match Fig. 3", f"weight MSE folded < unfolded < vanilla, each parameter ({model}); "
                      "verdict: the order holds on every pair for W_dec and W_enc",
                      "every layer pair", ", ".join(f"{p} {_fraction(ordered[p])}" for p in parts) + " pairs",
                      _verdict(all(ordered["W_dec"]) and all(ordered["W_enc"]))))
    share = r.get("cost_share")
    if share:
        b_share = median(v["unfolded"]["b_enc"] for v in share.values())
        dec_share = median(v["folded"]["W_dec"] for v in share.values())
        rows.append(Claim("SAE Match §4", "what decides the unfolded all-weights baseline: share of b_enc in its cost "
                          "(median over pairs; folded: share of W_dec)", "(not reported; plain sum of terms)",
                          f"unfolded b_enc {b_share:.1%}; folded W_dec {dec_share:.1%}", "reported"))
    comp = r.get("method_medians", {})
    folded, paper_base, fair = comp.get("folded"), comp.get("unfolded"), comp.get("unfolded_decoder")
    decoding = r.get("decoding", "?")

    def fmt(c: dict[str, Any] | None, key: str) -> str:
        return "—" if c is None or c.get(key) is None else f"{c[key]:.3f}"

    def better(a: dict[str, Any], b: dict[str, Any], key: str, lower: bool = False) -> bool:
        """Beyond the noise: by more than 0.01 in EV, and in ΔL by more than the half-width of
        the widest bootstrap interval measured (medians over pairs)."""
        if a.get(key) is None or b.get(key) is None:
            return False
        if key == "delta_loss":
            widths = [(v["ci"][1] - v["ci"][0]) / 2 for pair in r.get("delta_loss", {}).values() for v in pair.values()]
            margin = max(widths, default=0.0)
            return a[key] < b[key] - margin if lower else a[key] > b[key] + margin
        return a[key] > b[key] + 0.01

    if folded and paper_base:
        rows.append(Claim("SAE Match §5", f"folding helps against the paper's baseline (unfolded, all weights); "
                          f"verdict: folded has higher median EV ({decoding} decoding, by > 0.01) and lower median ΔL (by more "
                          "than the bootstrap half-width)",
                          "folded better", f"EV {fmt(folded, 'ev')} vs {fmt(paper_base, 'ev')}; ΔL "
                          f"{fmt(folded, 'delta_loss')} vs {fmt(paper_base, 'delta_loss')}",
                          _verdict(better(folded, paper_base, "ev") and better(folded, paper_base, "delta_loss", True))))
    if folded and fair:
        rows.append(Claim("SAE Match §5", "folding helps against the fair baseline (unfolded, decoder only); verdict: "
                          "folded has higher median EV (by > 0.01) and lower median ΔL (by more than the bootstrap "
                          "half-width)", "(decoder-only ablation on par with all "
                          "weights)", f"EV {fmt(folded, 'ev')} vs {fmt(fair, 'ev')}; ΔL {fmt(folded, 'delta_loss')} vs "
                          f"{fmt(fair, 'delta_loss')}; agreement with data {fmt(folded, 'agreement')} vs "
                          f"{fmt(fair, 'agreement')}",
                          _verdict(better(folded, fair, "ev") and better(folded, fair, "delta_loss", True))))
    data = comp.get("data_based")
    if folded and data:
        rows.append(Claim("beyond", "data-free (folded) vs the data-based reference (activation correlation): "
                          "agreement, matching score, EV", "(not in the paper)",
                          f"agreement {fmt(folded, 'agreement')}; matching score {fmt(folded, 'cofire')} vs "
                          f"{fmt(data, 'cofire')}; EV {fmt(folded, 'ev')} vs {fmt(data, 'ev')}", "reported"))
    ev = r.get("explained_variance", {})
    if ev:
        med = {k: median(v[k] for v in ev.values()) for k in ("own", "previous", f"folded/{decoding}")}
        rows.append(Claim("SAE Match §5", "encode-permute-decode between the baselines (median EV); verdict: own SAE ≥ "
                          "folded ≥ encode-decode of x(t)", "below own SAE, above encode-decode of x(t)",
                          f"own {med['own']:.3f}, folded {med[f'folded/{decoding}']:.3f}, previous {med['previous']:.3f}",
                          _verdict(med["own"] >= med[f"folded/{decoding}"] >= med["previous"])))
        both = {d: median(v[f"folded/{d}"] for v in ev.values()) for d in ("folded", "original")}
        rows.append(Claim("SAE Match §5", "which SAEs decode in encode-permute-decode (median EV of the folded match)",
                          "(not stated)", f"folded SAEs {both['folded']:.3f}, original SAEs {both['original']:.3f}; "
                          f"chapter uses {decoding}", "reported"))
    dl = r.get("delta_loss", {})
    if dl:
        med_own = median(v["own"]["mean"] for v in dl.values())
        rows.append(Claim("SAE Match §5", "ΔL measured on enough text (tokens per layer pair, 95 % bootstrap over windows)",
                          "(not stated)", f"{r.get('delta_loss_tokens', '?')} predictions per pair on {len(dl)} pairs; "
                          f"own-SAE floor {med_own:.3f} nats", "reported"))
    score = r.get("matching_score")
    if score:
        rows.append(Claim("SAE Match §5", "matched features fire together (mean P(partner fires, given the feature fires)); "
                          "verdict: folded > unfolded and > 2× random", "folded > unfolded, far above chance",
                          ", ".join(f"{k} {v:.3f}" for k, v in score.items() if k in ("folded", "unfolded",
                                                                                       "unfolded_decoder", "data_based",
                                                                                       "random")),
                          _verdict(score["folded"] > score["unfolded"] and score["folded"] > 2 * score["random"])))
    pers = r.get("persistence")
    if pers:
        far = pers[max(pers, key=int)]
        k = max(pers, key=int)
        chance = max(far["cofire_chance"], 1e-12)
        rows.append(Claim("SAE Match §5", f"persistence at distance {k}: composed chains and direct matches against "
                          "chance; verdict: both above 2× chance", "significant for ~5 layers",
                          f"composed ×{far['cofire_composed'] / chance:.1f}, direct ×{far['cofire_direct'] / chance:.1f} "
                          f"chance ({far['cofire_chance']:.3f}); composed = direct on {far['agreement']:.0%}",
                          _verdict(far["cofire_composed"] > 2 * chance and far["cofire_direct"] > 2 * chance)))
    prune = r.get("pruning")
    if prune:
        epd = [v["encode_permute_decode"] for v in prune.values()]
        beats = [v["encode_permute_decode"] < v["layer_drop"] for v in prune.values()]
        rows.append(Claim("SAE Match §5", "layer pruning: ΔL of encode-permute-decode vs dropping the block",
                          "small from about layer 10 on (Gemma 2 2B)",
                          f"median ΔL {median(epd):.3f} nats; beats layer drop on {_fraction(beats)} measured blocks",
                          "reported"))
    quality = r.get("sae_quality")
    if quality:
        rows.append(Claim("beyond", "the SAEs matched: median held-out EV, L0, dead fraction over layers",
                          "(Gemma Scope: trained on billions of tokens)",
                          f"EV {median(q['explained_variance'] for q in quality.values()):.3f}, L0 "
                          f"{median(q['l0'] for q in quality.values()):.1f}, dead "
                          f"{median(q['dead_fraction'] for q in quality.values()):.1%}", "reported"))
    gt, fig2 = r.get("ground_truth_recovery"), r.get("figure2_recovery")
    if gt:
        rows.append(Claim("beyond", "ground-truth permutation recovered, folded (unfolded)", "(not in the paper)",
                          f"{gt['folded']:.1%} ({gt['unfolded']:.1%})", _verdict(gt["folded"] >= 0.99)))
    if fig2:
        rows.append(Claim("SAE Match Fig. 2", "raw-unit pair whose features grow by their own factors: folded recovers, "
                          "unfolded all-weights does not; verdict: folded ≥ 99 % and unfolded < 50 %",
                          "folding removes the scale", ", ".join(f"{k} {v:.0%}" for k, v in fig2.items()),
                          _verdict(fig2["folded, all weights"] >= 0.99 and fig2["unfolded, all weights"] < 0.5)))
    return rows


SECTIONS: tuple[tuple[str, str, Callable[[dict[str, Any]], list[Claim]]], ...] = (
    ("02_dataset", "App. C.1", _dataset_claims),
    ("03_base_models", "App. C.2", _base_model_claims),
    ("04_fitting_m", "RESULT 1", _m_claims),
    ("05_equivariant_sae", "RESULT 3", _frontier_claims),
    ("06_probing", "RESULT 2", _probing_claims),
    ("07_sae_match", "SAE Match", _match_claims),
)


def claims(profile: str) -> list[Claim]:
    """Every claim with this run's number and a verdict, in book order."""
    rows: list[Claim] = []
    for stem, source, build in SECTIONS:
        data = _load(profile, stem)
        if data is None:
            rows.append(Claim(source, f"chapter {stem}", "", f"results/{profile}/{stem}.json missing", "not run"))
            continue
        try:
            rows += build(data)
        except (KeyError, TypeError, ValueError) as err:  # a result file of an older layout
            rows.append(Claim(source, f"chapter {stem}", "", f"unreadable result ({err!r})", "not run"))
    return rows


def claims_markdown(rows: list[Claim]) -> str:
    """The claims as a Markdown table."""
    # text symbols every system font has (emoji render as empty boxes without an emoji font)
    marks = {"agrees": "✓ agrees", "differs": "✗ differs", "reported": "reported", "not run": "— not run"}
    text = "| source | claim | paper | this run | verdict |\n|---|---|---|---|---|\n"
    for c in rows:
        text += f"| {c.source} | {c.claim} | {c.paper} | {c.ours} | {marks[c.verdict]} |\n"
    return text


def timings_markdown(profile: str) -> str:
    """Wall time of every chapter and the machine, from ``results/<profile>/timings.json``."""
    data = _load(profile, "timings")
    if not data:
        return "No chapter timings recorded for this profile."
    rows = "| chapter | wall time |\n|---|---|\n"
    for stem, seconds in sorted(data["chapters"].items()):
        rows += f"| {stem} | {seconds / 60:.1f} min ({seconds:.0f} s) |\n"
    total = sum(v for k, v in data["chapters"].items() if k != "08_summary")
    rows += f"| **total (chapters 1–7)** | **{total / 60:.1f} min** |\n"
    m = data.get("machine", {})
    rows += (f"\nMachine: {m.get('cpu', '?')}, {m.get('cpus', '?')} CPUs, torch {m.get('torch', '?')} "
             f"with {m.get('torch_threads', '?')} threads, GPU: {m.get('gpu') or 'none'}. Each time is the "
             "chapter's most recent execution: one that found its models in the cache (after a change to "
             "the code, say) is faster than a cold run.")
    return rows


README_START, README_END = "<!-- summary:start -->", "<!-- summary:end -->"


def update_readme(profile: str, path: Path) -> None:
    """Replace the text between ``<!-- summary:start -->`` and ``<!-- summary:end -->`` in
    ``path`` with this profile's claims and timings (atomically)."""
    text = path.read_text()
    if text.count(README_START) != 1 or text.count(README_END) != 1:
        raise ValueError(f"{path} must contain {README_START} and {README_END} exactly once")
    head, rest = text.split(README_START)
    _, tail = rest.split(README_END)
    block = (f"{README_START}\n_Generated by `python -m esae.summary --profile {profile} --readme README.md` "
             f"from the `{profile}` run's result files._\n\n{claims_markdown(claims(profile))}\n"
             f"{timings_markdown(profile)}\n{README_END}")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(head + block + tail)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    """``python -m esae.summary --profile default``: print the claims table (Markdown);
    with ``--readme README.md`` write it, with the chapter timings, into the README instead."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m esae.summary", description=main.__doc__)
    parser.add_argument("--profile", default="default", choices=("smoke", "default", "paper"))
    parser.add_argument("--readme", type=Path, help="a Markdown file with summary markers to update")
    args = parser.parse_args(argv)
    if args.readme is not None:
        update_readme(args.profile, args.readme)
        print(f"updated {args.readme}")
    else:
        print(claims_markdown(claims(args.profile)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
