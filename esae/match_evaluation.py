"""Chapter 7's evaluations of SAE Match that need only SAEs and activations.

Weight MSE of matched parameters and each parameter's share of the matching cost
(:func:`weight_mse`, :func:`cost_shares`); the data-based reference match from activation
correlations (:func:`data_match`); every method's matches for a stack of layers
(:func:`match_stack`, :class:`LayerMatches`); the hidden-state approximation by
encode-permute-decode (:func:`approximations`, :func:`hidden_state_ev`); the matching score
(:func:`matching_scores`), persistence along composed matches (:func:`persistence`), partial
matching by MSE quantile (:func:`partial_matching_ev`), per-layer statistics and feature
examples; two methods compared paired over layer pairs (:func:`compare_over_pairs`). What needs the language model itself (ΔL, the residual stream) is in
:mod:`esae.language_models`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sae_lens import JumpReLUSAE
from scipy.optimize import linear_sum_assignment

from esae import assignment
from esae.checks import check_choice, check_float, check_int
from esae.runtime import Store
from esae.sae_match import Match, _check_pair, _check_permutation, compose, feature_vectors, fold, folded_parts, match

Tensor = torch.Tensor


PARTS = ("W_dec", "W_enc", "b_enc")


def _part_slices(d: int) -> dict[str, slice]:
    """Where each parameter sits in an ``"all"`` feature vector of :func:`~esae.sae_match.feature_vectors`."""
    return {"W_dec": slice(0, d), "W_enc": slice(d, 2 * d), "b_enc": slice(2 * d, 2 * d + 1)}


@torch.no_grad()
def weight_mse(sae_a: JumpReLUSAE, sae_b: JumpReLUSAE, permutation=None) -> dict[str, float]:
    """Mean squared difference per parameter between feature ``i`` of A and feature
    ``permutation[i]`` of B (identity when ``None``), separately for ``W_dec`` (decoder rows),
    ``W_enc`` (encoder columns) and ``b_enc``, and over all of them together (``"all"``, the
    matching objective divided by its number of terms). Pass folded SAEs to compare on folded
    weights, as the paper's Figure 3 does."""
    _check_pair(sae_a, sae_b)
    perm = np.arange(sae_a.cfg.d_sae) if permutation is None else _check_permutation(permutation, sae_a.cfg.d_sae)
    idx = torch.as_tensor(perm, device=sae_b.W_dec.device)
    va, vb = feature_vectors(sae_a, "all").double(), feature_vectors(sae_b, "all").double()[idx]
    sq = (va - vb).pow(2)
    out = {part: float(sq[:, sl].mean()) for part, sl in _part_slices(sae_a.cfg.d_in).items()}
    out["all"] = float(sq.mean())
    return out


@torch.no_grad()
def cost_shares(sae_a: JumpReLUSAE, sae_b: JumpReLUSAE, *, fold: bool, permutation=None) -> dict[str, float]:
    """Share of ``W_dec``, ``W_enc`` and ``b_enc`` in the all-weights matching cost
    ``Σ ‖a_i − b_j‖²`` (folded parameters when ``fold``). Without ``permutation``: summed over
    every candidate pair ``(i, j)`` — what the solver has to weigh — computed exactly as
    ``F·Σ‖a‖² + F·Σ‖b‖² − 2 (Σa)·(Σb)`` per term; with it, over the matched pairs only."""
    _check_pair(sae_a, sae_b)
    va = feature_vectors(sae_a, "all", folded=fold).double()
    vb = feature_vectors(sae_b, "all", folded=fold).double()
    if permutation is not None:
        vb = vb[torch.as_tensor(_check_permutation(permutation, sae_a.cfg.d_sae), device=vb.device)]
    terms = {}
    for part, sl in _part_slices(sae_a.cfg.d_in).items():
        a, b = va[:, sl], vb[:, sl]
        if permutation is None:
            n = a.shape[0]
            terms[part] = float(n * a.pow(2).sum() + n * b.pow(2).sum() - 2 * a.sum(0) @ b.sum(0))
        else:
            terms[part] = float((a - b).pow(2).sum())
    total = sum(terms.values())
    return {part: v / total if total > 0 else float("nan") for part, v in terms.items()}


@torch.no_grad()
def activation_correlation(z_a: Tensor, z_b: Tensor, chunk: int = 8192) -> Tensor:
    """Pearson correlation over tokens between every feature of A and every feature of B:
    ``z_a`` (N, F_a) and ``z_b`` (N, F_b) activations on the same N tokens → (F_a, F_b) float64.
    A feature that never varies (dead) correlates 0 with everything. Accumulated over token
    chunks (float32 products, float64 sums)."""
    if z_a.ndim != 2 or z_b.ndim != 2 or z_a.shape[0] != z_b.shape[0]:
        raise ValueError(f"z_a and z_b must be (N, F) activations on the same N tokens, got {tuple(z_a.shape)} and "
                         f"{tuple(z_b.shape)}")
    n = z_a.shape[0]
    cross = torch.zeros(z_a.shape[1], z_b.shape[1], dtype=torch.float64)
    for s in range(0, n, chunk):
        cross += (z_a[s:s + chunk].float().T @ z_b[s:s + chunk].float()).double()
    mean_a, mean_b = z_a.double().mean(0), z_b.double().mean(0)
    std_a = (z_a.double().pow(2).mean(0) - mean_a.pow(2)).clamp_min(0).sqrt()
    std_b = (z_b.double().pow(2).mean(0) - mean_b.pow(2)).clamp_min(0).sqrt()
    cov = cross / n - mean_a[:, None] * mean_b[None, :]
    denom = std_a[:, None] * std_b[None, :]
    return torch.where(denom > 0, cov / denom.clamp_min(1e-300), torch.zeros_like(cov))


def data_match(z_a: Tensor, z_b: Tensor, solver: str = "exact", k: int = 8) -> Match:
    """The data-based reference matching: the permutation maximising the summed Pearson
    correlation of matched features' activations (``z_a``, ``z_b`` (N, F) on the same tokens).
    ``solver="exact"`` runs ``linear_sum_assignment`` on the (F, F) correlation matrix;
    ``"sparse"`` runs :func:`esae.assignment.sparse_assignment` on the standardised activation
    columns (whose inner products are the correlations). ``cost[i]`` is ``1 − corr`` of the
    pair (``weights="data"``)."""
    check_choice("solver", solver, assignment.SOLVERS)
    if z_a.ndim != 2 or z_a.shape != z_b.shape:
        raise ValueError(f"z_a and z_b must be (N, F) activations of equally wide SAEs on the same N tokens, got "
                         f"{tuple(z_a.shape)} and {tuple(z_b.shape)}")
    if solver == "exact":
        corr = activation_correlation(z_a, z_b)
        rows, cols = linear_sum_assignment(-corr.numpy())
        perm = np.empty(len(rows), dtype=np.int64)
        perm[rows] = cols
        return Match(perm, 1 - corr.numpy()[np.arange(len(perm)), perm], folded=False, weights="data")

    def standardised(z: Tensor) -> Tensor:  # (F, N): unit-norm centred columns, zero for dead features
        zc = (z.double() - z.double().mean(0)).T
        norm = zc.norm(dim=1, keepdim=True)
        return torch.where(norm > 0, zc / norm.clamp_min(1e-300), torch.zeros_like(zc)).float()

    va, vb = standardised(z_a), standardised(z_b)
    perm = assignment.sparse_assignment(va, vb, k)
    corr = (va.double() * vb[torch.as_tensor(perm)].double()).sum(1).numpy()
    return Match(perm, 1 - corr, folded=False, weights="data")


def pair_name(t: int, u: int) -> str:
    """The key of a layer pair in results: ``"3-4"``."""
    return f"{t}-{u}"


# the matching methods of chapter 7: name -> (fold, weights); "data_based" needs activations
MATCH_KINDS = {"folded": (True, "all"), "unfolded": (False, "all"), "unfolded_decoder": (False, "decoder"),
               "folded_decoder": (True, "decoder"), "folded_encoder": (True, "encoder")}
METHODS = ("folded", "unfolded", "unfolded_decoder", "folded_decoder", "folded_encoder", "data_based")


@dataclass
class LayerMatches:
    """Everything chapter 7 matches for a stack of SAEs at ``layers``: the SAEs, their folded
    versions, and ``matches[method]`` (one :class:`~esae.sae_match.Match` per adjacent pair) for every method of
    :data:`MATCH_KINDS` and, when training activations were given, ``"data_based"``."""

    layers: list[int]
    saes: list[JumpReLUSAE]
    folded_saes: list[JumpReLUSAE]
    matches: dict[str, list[Match]]

    @property
    def pairs(self) -> list[str]:
        return [pair_name(t, u) for t, u in zip(self.layers[:-1], self.layers[1:])]

    @property
    def methods(self) -> list[str]:
        return [m for m in METHODS if m in self.matches]

    @property
    def folded(self) -> list[Match]:
        return self.matches["folded"]

    @property
    def unfolded(self) -> list[Match]:
        return self.matches["unfolded"]


def match_stack(saes: Sequence[JumpReLUSAE], layers: Sequence[int], cache_key=None, train_acts: Tensor | None = None,
                solver: str = "exact", k: int = 8, store: Store | None = None) -> LayerMatches:
    """Fold every SAE and match every adjacent pair by every method of :data:`MATCH_KINDS`
    (``solver``/``k`` as in :func:`~esae.sae_match.match`) and, with ``train_acts`` (L, N, d) indexed like
    ``layers``, by :func:`data_match` on the SAEs' activations over those tokens. With
    ``cache_key`` (anything that identifies the SAEs) and a ``store`` (e.g. :mod:`esae.cache`)
    each pair's matches are kept as soon as they are computed, so an interrupted run keeps the pairs it finished."""
    from esae.runtime import progress

    if len(saes) != len(layers) or len(saes) < 2:
        raise ValueError(f"saes and layers must have the same length, at least 2, got {len(saes)} and {len(layers)}")
    if train_acts is not None and train_acts.shape[0] != len(saes):
        raise ValueError(f"train_acts must hold one layer per SAE ({len(saes)}), got shape {tuple(train_acts.shape)}")
    zs: dict[int, Tensor] = {}

    def z(j: int) -> Tensor:
        for old in [o for o in zs if o < j - 1]:
            del zs[old]
        if j not in zs:
            zs[j] = feature_acts(saes[j], train_acts[j])
        return zs[j]

    def pair(i: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        out = {}
        for kind, (folded, weights) in MATCH_KINDS.items():
            m = match(saes[i], saes[i + 1], fold=folded, weights=weights, solver=solver, k=k)
            out[kind] = (m.permutation, m.cost)
        if train_acts is not None:
            m = data_match(z(i), z(i + 1))
            out["data_based"] = (m.permutation, m.cost)
        return out

    raw = []
    for i in progress(range(len(saes) - 1), desc="matching layers"):
        if cache_key is None or store is None:
            raw.append(pair(i))
        else:
            key = {"saes": cache_key, "pair": [layers[i], layers[i + 1]], "data": train_acts is not None,
                   "solver": solver, "k": k if solver == "sparse" else None, "version": 2}
            if solver == "sparse":  # OR-Tools and the int8 candidate pass (2026-11-29)
                key["sparse_version"] = 2
            raw.append(store.cached_torch("layer_pair_matches", key, lambda i=i: pair(i)))
    kinds = list(MATCH_KINDS) + (["data_based"] if train_acts is not None else [])
    matches = {kind: [Match(r[kind][0], r[kind][1], *(MATCH_KINDS.get(kind, (False, "data")))) for r in raw]
               for kind in kinds}
    return LayerMatches(list(layers), list(saes), [fold(s) for s in saes], matches)


MSE_VARIANTS = ("vanilla", "unfolded", "unfolded_decoder", "folded", "data_based")


def mse_table(lm: LayerMatches) -> dict[str, dict[str, dict[str, float]]]:
    """Evaluation 1 (the paper's Figure 3): per adjacent pair, the weight MSE per parameter on
    folded weights (:func:`weight_mse`) of the identity ("vanilla") and of the unfolded
    all-weights, unfolded decoder-only, folded and (when present) data-based matches."""
    table = {}
    for i, name in enumerate(lm.pairs):
        fa, fb = lm.folded_saes[i], lm.folded_saes[i + 1]
        row = {"vanilla": weight_mse(fa, fb)}
        for v in MSE_VARIANTS[1:]:
            if v in lm.matches:
                row[v] = weight_mse(fa, fb, lm.matches[v][i].permutation)
        table[name] = row
    return table


def cost_share_table(lm: LayerMatches) -> dict[str, dict[str, dict[str, float]]]:
    """Per adjacent pair, :func:`cost_shares` of the unfolded and folded all-weights costs, over
    every candidate pair (``"unfolded"``, ``"folded"``) and at the match each found
    (``"unfolded_matched"``, ``"folded_matched"``)."""
    out = {}
    for i, name in enumerate(lm.pairs):
        a, b = lm.saes[i], lm.saes[i + 1]
        out[name] = {"unfolded": cost_shares(a, b, fold=False), "folded": cost_shares(a, b, fold=True),
                     "unfolded_matched": cost_shares(a, b, fold=False, permutation=lm.unfolded[i].permutation),
                     "folded_matched": cost_shares(a, b, fold=True, permutation=lm.folded[i].permutation)}
    return out


DECODINGS = ("folded", "original")
BASELINES = ("own", "previous", "layer_drop")


def transfer_map(lm: LayerMatches, i: int, method: str, decoding: str = "folded") -> Callable[[Tensor, Tensor], Tensor]:
    """Encode-permute-decode for pair ``i`` (layers ``t, u``) along ``lm.matches[method][i]``,
    a function ``(x_t, x_u) -> x̂_u`` on ``(..., d)`` tensors. ``decoding="folded"`` encodes
    with the folded SAE t and decodes with the folded SAE u (a feature's activation travels in
    units of its threshold, θ_t, and is written back at θ_u); ``"original"`` uses the SAEs as
    given (the activation travels in the raw units of ``x_t``, written along u's decoder row)."""
    check_choice("method", method, lm.methods)
    check_choice("decoding", decoding, DECODINGS)
    m = lm.matches[method][i]
    enc, dec = (lm.folded_saes[i], lm.folded_saes[i + 1]) if decoding == "folded" else (lm.saes[i], lm.saes[i + 1])
    return lambda xt, xu: dec.decode(m.transfer(enc.encode(xt)))


def approximations(lm: LayerMatches, i: int, decoding: str = "folded") -> dict[str, Callable]:
    """The approximations of ``x(u)`` for pair ``i``: every matching method's
    :func:`transfer_map` with ``decoding``, and the paper's baselines ``own`` (encode-decode
    ``x_u`` with SAE u, the ceiling), ``previous`` (encode-decode ``x_t`` with SAE t, no
    transfer) and ``layer_drop`` (``x_t`` itself: skip block u)."""
    su, st = lm.saes[i + 1], lm.saes[i]
    maps = {m: transfer_map(lm, i, m, decoding) for m in lm.methods}
    maps.update({"own": lambda xt, xu: su.decode(su.encode(xu)), "previous": lambda xt, xu: st.decode(st.encode(xt)),
                 "layer_drop": lambda xt, xu: xt})
    return maps


PAIRED_ALPHA = 0.05  # two-sided level of :func:`compare_over_pairs`'s sign test


def compare_over_pairs(a: Mapping[str, float], b: Mapping[str, float], *, lower_is_better: bool = False,
                       alpha: float = PAIRED_ALPHA) -> dict[str, Any]:
    """Method ``a`` against method ``b`` on the layer pairs both were measured on (``{pair: value}``
    of one metric, e.g. EV or ΔL): they share the pair's SAEs, tokens and windows, so the comparison
    is paired. Counts the pairs where ``a`` is better (``wins``), worse (``losses``) or equal, and
    tests the split with a two-sided sign test (exact binomial, ties dropped). Returns ``{"n",
    "wins", "losses", "median_difference" (a − b), "p_value", "better", "decidable"}`` with
    ``better`` ``"a"`` or ``"b"`` when ``p_value < alpha``, else ``None`` (on par within what the
    pairs can tell); ``decidable`` is False when even a clean sweep of the untied pairs could not
    reach ``alpha`` (fewer than 6 at 0.05), so ``better`` is None whatever the methods do."""
    from scipy.stats import binomtest

    check_float("alpha", alpha, 0.0, 1.0, lo_open=True)
    common = [p for p in a if p in b and a[p] is not None and b[p] is not None]
    if not common:
        raise ValueError("a and b share no layer pair with a value")
    diff = np.array([float(a[p]) - float(b[p]) for p in common])
    gain = -diff if lower_is_better else diff
    wins, losses = int((gain > 0).sum()), int((gain < 0).sum())
    p_value = float(binomtest(wins, wins + losses, 0.5).pvalue) if wins + losses else 1.0
    better = ("a" if wins > losses else "b") if p_value < alpha else None
    return {"n": len(common), "wins": wins, "losses": losses, "median_difference": float(np.median(diff)),
            "p_value": p_value, "better": better, "decidable": 2 * 0.5 ** (wins + losses) < alpha}


def explained_variance(target: Tensor, pred: Tensor) -> float:
    """``1 − Σ‖x − x̂‖² / Σ‖x − x̄‖²`` over (n, d) tensors (negative when x̂ is worse than the mean)."""
    from esae.metrics import r2_pooled

    return r2_pooled(target.double(), pred.double())


@torch.no_grad()
def hidden_state_ev(lm: LayerMatches, acts: Tensor, batch_size: int = 4096) -> dict[str, dict[str, float]]:
    """Evaluation 2, explained variance of ``x̂(u)`` against the true ``x(u)`` on held-out
    activations ``acts`` (L, M, d) indexed like ``lm.layers``: per adjacent pair, every
    matching method under both decodings (keys ``"<method>/<decoding>"``) and the baselines."""
    out = {}
    for i, name in enumerate(lm.pairs):
        maps = {f"{m}/{dec}": f for dec in DECODINGS for m, f in approximations(lm, i, dec).items() if m in lm.methods}
        maps.update({b: approximations(lm, i)[b] for b in BASELINES})
        device = lm.saes[i].W_enc.device
        sq = {k: 0.0 for k in maps}
        target = acts[i + 1].double()
        total = float((target - target.mean(0)).pow(2).sum())
        for start in range(0, acts.shape[1], batch_size):
            xt, xu = (acts[j, start:start + batch_size].to(device) for j in (i, i + 1))
            for k, f in maps.items():
                sq[k] += float((f(xt, xu).double().cpu() - xu.double().cpu()).pow(2).sum())
        out[name] = {k: 1 - v / total for k, v in sq.items()}
    return out


@torch.no_grad()
def feature_acts(sae: JumpReLUSAE, x: Tensor, batch_size: int = 4096) -> Tensor:
    """``sae.encode`` of (M, d) activations in batches on the SAE's device: (M, F) float32 on the CPU."""
    return torch.cat([sae.encode(x[s:s + batch_size].to(sae.W_enc.device, sae.W_enc.dtype)).float().cpu()
                      for s in range(0, x.shape[0], batch_size)])


@torch.no_grad()
def matching_score(z_a: Tensor, z_b: Tensor, permutation, min_fires: int = 5) -> dict[str, float]:
    """Evaluation 3, activation agreement of matched features on the same tokens: ``z_a``
    (M, F) feature activations of SAE A on ``x(t)``, ``z_b`` (M, F) of SAE B on ``x(u)``.

    ``cofire``: mean over A's features that fire at least ``min_fires`` times of
    P(partner fires | feature fires); ``correlation``: mean Pearson correlation over tokens
    between a feature's activation and its partner's (same features; a partner that never
    fires counts as 0); ``n_features``: how many features were scored."""
    perm = torch.as_tensor(_check_permutation(permutation, z_a.shape[1]), device=z_b.device)
    zb = z_b[:, perm]
    fa, fb = z_a > 0, zb > 0
    n_fire = fa.sum(0)
    keep = n_fire >= min_fires
    if not bool(keep.any()):
        raise ValueError(f"no feature of A fires at least min_fires={min_fires} times on these {z_a.shape[0]} tokens")
    cofire = (fa & fb).sum(0)[keep].double() / n_fire[keep].double()
    a, b = z_a[:, keep].double(), zb[:, keep].double()
    a, b = a - a.mean(0), b - b.mean(0)
    denom = (a.pow(2).sum(0) * b.pow(2).sum(0)).sqrt()
    corr = torch.where(denom > 0, (a * b).sum(0) / denom.clamp_min(1e-300), torch.zeros_like(denom))
    return {"cofire": float(cofire.mean()), "correlation": float(corr.mean()), "n_features": int(keep.sum())}


def matching_scores(lm: LayerMatches, acts: Tensor, min_fires: int = 5, seed: int = 0) -> dict[str, dict[str, dict]]:
    """:func:`matching_score` on held-out ``acts`` (L, M, d) for every adjacent pair and every
    matching method, the identity ("vanilla") and a random permutation (chance level); with
    ``"agreement_with_data"``, the fraction of features each method pairs as the data-based
    reference does (when the stack has it)."""
    rng = np.random.default_rng(seed)
    out = {}
    z = feature_acts(lm.saes[0], acts[0])
    for i, name in enumerate(lm.pairs):
        z_next = feature_acts(lm.saes[i + 1], acts[i + 1])
        perms = {m: lm.matches[m][i].permutation for m in lm.methods}
        perms.update({"vanilla": np.arange(z.shape[1]), "random": rng.permutation(z.shape[1])})
        out[name] = {k: matching_score(z, z_next, p, min_fires) for k, p in perms.items()}
        if "data_based" in lm.matches:
            ref = lm.matches["data_based"][i].permutation
            for k, p in perms.items():
                out[name][k]["agreement_with_data"] = float(np.mean(p == ref))
        z = z_next
    return out


def persistence(lm: LayerMatches, acts: Tensor, max_distance: int, starts: Sequence[int] | None = None,
                min_fires: int = 5, seed: int = 0, solver: str = "exact", k: int = 8) -> dict[int, dict[str, float]]:
    """Evaluation 4: follow features from layer index ``s`` through the composed folded
    matches ``s → s+1 → … → s+k`` and compare with the direct folded match ``s → s+k``.
    For each distance ``k`` (1..``max_distance``), averaged over ``starts`` (default: every
    layer with room): ``agreement`` (fraction of features the two send to the same partner),
    ``cofire_composed`` / ``cofire_direct`` (matching score of each on held-out ``acts``) and
    ``cofire_chance`` (that of a random permutation between the same two layers). Direct
    matches use ``solver`` and ``k`` as in :func:`~esae.sae_match.match`."""
    from esae.runtime import progress

    n = len(lm.saes)
    n_candidates = k
    check_int("max_distance", max_distance, 1, n - 1)
    starts = list(range(n - 1)) if starts is None else list(starts)
    rng = np.random.default_rng(seed)
    zs = {}

    def z(j: int) -> Tensor:
        if j not in zs:
            zs[j] = feature_acts(lm.saes[j], acts[j])
        return zs[j]

    sums: dict[int, dict[str, list[float]]] = {}
    for s in progress(starts, desc="persistence"):
        composed = None
        for k in range(1, max_distance + 1):
            if s + k >= n:
                break
            composed = lm.folded[s] if composed is None else compose(composed, lm.folded[s + k - 1])
            if k == 1:
                direct = lm.folded[s]
            else:  # the SAEs are folded already (folding is idempotent), so skip folding them again
                m = match(lm.folded_saes[s], lm.folded_saes[s + k], fold=False, solver=solver, k=n_candidates)
                direct = Match(m.permutation, m.cost, folded=True, weights="all")
            rec = sums.setdefault(k, {"agreement": [], "cofire_composed": [], "cofire_direct": [],
                                      "cofire_chance": []})
            rec["agreement"].append(composed.agreement(direct))
            for key, perm in (("cofire_composed", composed.permutation), ("cofire_direct", direct.permutation),
                              ("cofire_chance", rng.permutation(composed.size))):
                rec[key].append(matching_score(z(s), z(s + k), perm, min_fires)["cofire"])
    return {k: {m: float(np.mean(v)) for m, v in rec.items()} for k, rec in sums.items()}


@torch.no_grad()
def partial_matching_ev(lm: LayerMatches, acts: Tensor, quantiles: Sequence[float] = (0.1, 0.5, 0.7, 1.0),
                        batch_size: int = 4096) -> dict[str, dict[str, float]]:
    """Evaluation 6 (the paper's appendix): match only the features whose folded match cost
    is at most the ``q``-quantile of the costs; those are decoded with layer u's (folded)
    decoder at their partner's row, the rest with layer t's own decoder; ``b_dec`` of layer u.
    Returns per pair ``{str(q): EV}``."""
    out = {}
    for i, name in enumerate(lm.pairs):
        ft, fu, m = lm.folded_saes[i], lm.folded_saes[i + 1], lm.folded[i]
        dec_moved = fu.W_dec[torch.as_tensor(m.permutation, device=fu.W_dec.device)]
        row = {}
        for q in quantiles:
            check_float("each quantile", q, 0.0, 1.0)
            keep = torch.as_tensor(m.cost <= np.quantile(m.cost, q), device=ft.W_dec.device)
            dec = torch.where(keep[:, None], dec_moved, ft.W_dec)
            dec, b_dec = dec.float().cpu(), fu.b_dec.float().cpu()
            preds = [feature_acts(ft, acts[i, s:s + batch_size]) @ dec + b_dec for s in range(0, acts.shape[1], batch_size)]
            row[str(q)] = explained_variance(acts[i + 1], torch.cat(preds))
        out[name] = row
    return out


@torch.no_grad()
def layer_statistics(saes: Sequence[JumpReLUSAE], layers: Sequence[int], acts: Tensor) -> dict[int, dict[str, float]]:
    """Evaluation 7 (the paper's Figure 1, left) and the SAEs' units: per layer, the mean
    residual norm ``‖x‖`` on ``acts`` (L, M, d); the mean and median threshold θ, the RMS of
    ``b_enc``, the median norm of encoder columns and of decoder rows of its SAE (original
    units), and the median norm of decoder rows after folding."""
    out = {}
    for i, (t, sae) in enumerate(zip(layers, saes)):
        b_enc = feature_vectors(sae, "encoder")[:, -1].double()
        out[t] = {"norm": float(acts[i].double().norm(dim=1).mean()), "mean_threshold": float(sae.threshold.mean()),
                  "median_threshold": float(sae.threshold.median()), "b_enc_rms": float(b_enc.pow(2).mean().sqrt()),
                  "w_enc_norm": float(sae.W_enc.double().norm(dim=0).median()),
                  "w_dec_norm": float(sae.W_dec.double().norm(dim=1).median()),
                  "folded_w_dec_norm": float(folded_parts(sae)["W_dec"].double().norm(dim=1).median())}
    return out


def feature_examples(lm: LayerMatches, i: int, acts: Tensor, n_pairs: int = 3, top_k: int = 4,
                     min_fires: int = 10) -> dict[str, list[dict]]:
    """Matched feature pairs of adjacent pair ``i`` for the paper's Figure 5: among features of
    layer t that fire at least ``min_fires`` times on ``acts`` (and whose partner fires too),
    the ``n_pairs`` lowest- and highest-cost folded matches, each with the indices of the
    ``top_k`` held-out tokens (into ``acts``' token axis) that activate it and its partner most."""
    m = lm.folded[i]
    za, zb = feature_acts(lm.saes[i], acts[i]), feature_acts(lm.saes[i + 1], acts[i + 1])
    fires_a, fires_b = (za > 0).sum(0).numpy(), (zb > 0).sum(0).numpy()
    ok = np.flatnonzero((fires_a >= min_fires) & (fires_b[m.permutation] >= min_fires))
    if len(ok) == 0:
        return {"low": [], "high": []}
    order = ok[np.argsort(m.cost[ok])]

    def describe(f: int) -> dict:
        g = int(m.permutation[f])
        return {"feature": int(f), "partner": g, "cost": float(m.cost[f]),
                "cofire": float(((za[:, f] > 0) & (zb[:, g] > 0)).sum() / max(int(fires_a[f]), 1)),
                "top_a": za[:, f].topk(top_k).indices.tolist(), "top_b": zb[:, g].topk(top_k).indices.tolist()}

    return {"low": [describe(f) for f in order[:n_pairs]], "high": [describe(f) for f in order[::-1][:n_pairs]]}
