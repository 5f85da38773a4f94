"""SAE Match: data-free matching of SAE features across layers (chapter 7).

Balagansky, Maksimov & Gavrilov (ICLR 2025) match the features of JumpReLU SAEs trained on
consecutive layers of a language model without looking at any data: fold each SAE's
thresholds into its weights, then find the permutation of layer B's features that minimises
the summed squared distance between matched parameter vectors, a linear assignment problem.

Objects follow sae-lens / Gemma Scope: ``W_enc`` (d, F), ``b_enc`` (F,), ``threshold`` θ (F,),
``W_dec`` (F, d), ``b_dec`` (d,); ``f = relu(pre) * (pre > θ)`` with ``pre = x W_enc + b_enc``
and ``x̂ = f W_dec + b_dec``.

This module holds the method (:func:`fold`, :func:`match`, :class:`Match`, :func:`compose`,
:func:`chain`), the evaluations of chapter 7 that need only SAEs and activations (weight MSE,
hidden-state approximation, matching score, persistence, partial matching, thresholds), and
the ground-truth experiments (permuted/rescaled/perturbed copies; SAEs trained on
``sae_lens.synthetic`` data whose features drift across "layers"). Everything that needs the
language model itself (activations, the ΔL hook, Gemma Scope loading) is in
:mod:`esae.language_models`.

As a tool on other SAEs: :func:`match` also takes sae-lens TopK and standard (ReLU) SAEs
(no thresholds, so folding is the identity for them) and SAEs of different widths (a
rectangular match: every feature of the smaller SAE gets a partner in the larger one, see
:class:`Match`); :meth:`Match.save` / :meth:`Match.load` write and read a documented format
(JSON header + .npz arrays); and ``python -m esae.sae_match A_DIR B_DIR [C_DIR ...] --out DIR
[--no-fold] [--weights all|decoder|encoder] [--solver exact|sparse] [--device cuda]`` matches
consecutive local sae-lens SAE folders, one saved match per pair, skipping pairs already written.
Released SAEs must be downloaded (e.g. with sae-lens) to local folders first.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
from scipy.optimize import linear_sum_assignment

from esae import assignment
from esae.checks import check_choice, check_float, check_int
from esae.runtime import Store, store_or_none

Tensor = torch.Tensor
Weights = Literal["decoder", "encoder", "all"]
WEIGHTS = ("decoder", "encoder", "all")


# --------------------------------------------------------------------------------------------
# Folding
# --------------------------------------------------------------------------------------------

def _check_jumprelu(sae: object, name: str = "sae") -> JumpReLUSAE:
    if not isinstance(sae, JumpReLUSAE):
        raise TypeError(f"{name} must be a sae_lens JumpReLUSAE (an inference SAE with per-feature thresholds), "
                        f"got {type(sae).__name__}")
    return sae


MATCHABLE = ("jumprelu", "topk", "standard")


def _check_matchable(sae: object, name: str = "sae") -> object:
    """``sae`` if its features are (``W_enc`` column, ``b_enc``, ``W_dec`` row): a sae-lens
    ``JumpReLUSAE`` (or subclass), ``TopKSAE`` or ``StandardSAE`` (exactly: subclasses such as
    a two-layer TopK SAE have other parameters)."""
    from sae_lens import StandardSAE, TopKSAE

    if not (isinstance(sae, JumpReLUSAE) or type(sae) in (TopKSAE, StandardSAE)):
        raise TypeError(f"{name} must be a sae_lens JumpReLUSAE, TopKSAE or StandardSAE (architecture one of "
                        f"{', '.join(map(repr, MATCHABLE))}), got {type(sae).__name__}")
    return sae


def build_jumprelu(template: JumpReLUSAE, *, W_enc: Tensor, b_enc: Tensor, threshold: Tensor, W_dec: Tensor,
                   b_dec: Tensor, **cfg_changes) -> JumpReLUSAE:
    """A new sae-lens ``JumpReLUSAE`` with the given weights and ``template``'s configuration
    (updated by ``cfg_changes``), on the template's device and dtype. Shapes: ``W_enc`` (d, F),
    ``b_enc`` (F,), ``threshold`` (F,), ``W_dec`` (F, d), ``b_dec`` (d,)."""
    cfg = dataclasses.replace(copy.deepcopy(template.cfg), **cfg_changes)
    device, dtype = template.W_enc.device, template.W_enc.dtype
    cfg.device = "meta"  # build without initialising weights, then assign ours (as sae-lens loads)
    sae = JumpReLUSAE(cfg)
    state = {"W_enc": W_enc, "b_enc": b_enc, "threshold": threshold, "W_dec": W_dec, "b_dec": b_dec}
    sae.load_state_dict({k: v.detach().to(device=device, dtype=dtype).contiguous() for k, v in state.items()},
                        assign=True)
    sae.cfg.device = str(device)
    sae.device = device
    return sae.eval()


@torch.no_grad()
def fold(sae: JumpReLUSAE) -> JumpReLUSAE:
    """Fold the thresholds into the weights: a new JumpReLU SAE whose output equals ``sae``'s
    on every input (up to float rounding), with every feature firing at the same scale.

    For each feature ``i`` with ``θ_i > 0``, encoder column ``W_enc[:, i]`` and ``b_enc[i]`` are
    divided by ``θ_i``, decoder row ``W_dec[i]`` is multiplied by ``θ_i`` and the threshold
    becomes 1: the feature's activation is now measured in units of its own threshold, and the
    decoder row carries the scale at which the feature writes into the residual stream.

    Thresholds ≤ 0 are handled explicitly. Because the activation is ``relu(pre) * (pre > θ)``,
    any ``θ_i ≤ 0`` behaves exactly like ``θ_i = 0``: a plain ReLU feature, unchanged by any
    positive rescaling and without a firing scale of its own, so it cannot be divided by. Such
    a feature keeps threshold 0 and is rescaled so that its decoder row has the median norm of
    the folded decoder rows of the SAE's positive-threshold features (norm 1 if there are
    none). The output is still exact, the result does not depend on how the original
    parametrisation scaled that feature, and it enters matching at its layer's typical scale.

    ``b_dec`` is unchanged. If the SAE subtracts ``b_dec`` from its input
    (``apply_b_dec_to_input``), that shift is absorbed into ``b_enc`` first, so the folded SAE
    has ``apply_b_dec_to_input=False`` and ``b_enc`` is the true encoder bias. Scales are
    computed in float64; each weight is then divided or multiplied once in the SAE's dtype.
    """
    sae = _check_jumprelu(sae)
    parts = folded_parts(sae)
    metadata = copy.deepcopy(sae.cfg.metadata)
    metadata.folded_thresholds = True
    return build_jumprelu(sae, **parts, b_dec=sae.b_dec, apply_b_dec_to_input=False, metadata=metadata)


@torch.no_grad()
def folded_parts(sae: JumpReLUSAE) -> dict[str, Tensor]:
    """The folded ``W_enc`` (d, F), ``b_enc`` (F,), ``threshold`` (F,) and ``W_dec`` (F, d) of
    :func:`fold` without building an SAE (matching at 65k features needs the memory)."""
    sae = _check_jumprelu(sae)
    W_enc, b_enc, W_dec, b_dec, theta = sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, sae.threshold
    if sae.cfg.apply_b_dec_to_input:  # a sum over d terms: accumulate it in float64
        b_enc = (b_enc.double() - b_dec.double() @ W_enc.double()).to(b_enc.dtype)
    theta = theta.double()
    positive = theta > 0
    dec_norm = W_dec.double().norm(dim=1)
    target = (theta * dec_norm)[positive].median() if bool(positive.any()) else theta.new_ones(())
    # a feature with a zero decoder row writes nothing; any scale is exact, keep it
    relu_scale = torch.where(dec_norm > 0, dec_norm / target, torch.ones_like(dec_norm))
    scale = torch.where(positive, theta, 1 / relu_scale)
    # one multiplication or division per weight, each rounded once to the SAE's dtype
    scale_t = scale.to(W_enc.dtype)
    return {"W_enc": W_enc / scale_t, "b_enc": b_enc / scale_t, "threshold": positive.to(W_enc.dtype),
            "W_dec": W_dec * scale_t[:, None]}


_fold = fold  # `match` takes a keyword argument named `fold`


@torch.no_grad()
def rescale_features(sae: JumpReLUSAE, scale: Tensor) -> JumpReLUSAE:
    """The same function with feature ``i`` reparametrised by ``scale[i] > 0``: encoder column,
    ``b_enc`` and threshold multiplied by it, decoder row divided by it (output unchanged).
    Unfolded matching is sensitive to this symmetry; folded matching is not."""
    sae = _check_jumprelu(sae)
    scale = torch.as_tensor(scale, dtype=sae.W_enc.dtype, device=sae.W_enc.device)
    if scale.shape != (sae.cfg.d_sae,) or not bool((scale > 0).all()):
        raise ValueError(f"scale must be ({sae.cfg.d_sae},) and positive, got shape {tuple(scale.shape)}")
    return build_jumprelu(sae, W_enc=sae.W_enc * scale, b_enc=sae.b_enc * scale, threshold=sae.threshold * scale,
                          W_dec=sae.W_dec / scale[:, None], b_dec=sae.b_dec)


@torch.no_grad()
def permute_features(sae: JumpReLUSAE, permutation) -> JumpReLUSAE:
    """The same SAE with its features reordered: new feature ``j`` is old feature
    ``permutation[j]`` (``permutation`` (F,) a permutation of ``0..F-1``)."""
    sae = _check_jumprelu(sae)
    perm = torch.as_tensor(_check_permutation(np.asarray(permutation), sae.cfg.d_sae), device=sae.W_enc.device)
    return build_jumprelu(sae, W_enc=sae.W_enc[:, perm], b_enc=sae.b_enc[perm], threshold=sae.threshold[perm],
                          W_dec=sae.W_dec[perm], b_dec=sae.b_dec)


# --------------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------------

def _check_permutation(perm: np.ndarray, size: int | None = None, name: str = "permutation") -> np.ndarray:
    perm = np.asarray(perm)
    if perm.ndim != 1 or not np.issubdtype(perm.dtype, np.integer):
        raise ValueError(f"{name} must be a 1-d integer array, got dtype {perm.dtype} and shape {perm.shape}")
    if size is not None and len(perm) != size:
        raise ValueError(f"{name} must have length {size}, got {len(perm)}")
    if not np.array_equal(np.sort(perm), np.arange(len(perm))):
        raise ValueError(f"{name} must be a permutation of 0..{len(perm) - 1}")
    return perm.astype(np.int64)


MATCH_FORMAT = "esae.sae_match.Match"
MATCH_FORMAT_VERSION = 1


def _check_partners(partner: np.ndarray, width_b: int) -> np.ndarray:
    """Validate a rectangular match's partner array (F_a,): distinct indices in ``0..width_b-1``
    and ``-1``, exactly ``min(F_a, width_b)`` of them matched."""
    partner = np.asarray(partner)
    if partner.ndim != 1 or not np.issubdtype(partner.dtype, np.integer):
        raise ValueError(f"permutation must be a 1-d integer array, got dtype {partner.dtype} and shape "
                         f"{partner.shape}")
    matched = partner[partner >= 0]
    if partner.min(initial=0) < -1 or matched.max(initial=-1) >= width_b or len(np.unique(matched)) != len(matched):
        raise ValueError(f"permutation must hold distinct partner indices in 0..{width_b - 1} or -1 (unmatched)")
    if len(matched) != min(len(partner), width_b):
        raise ValueError(f"permutation must match min(F_a, F_b) = {min(len(partner), width_b)} features, "
                         f"got {len(matched)} matched")
    return partner.astype(np.int64)


def _write_atomic(path: Path, write: Callable[[object], None], mode: str) -> None:
    """Write ``path`` through a temporary file in the same folder, then rename it into place."""
    import os
    import tempfile

    from esae.temporaries import owned_prefix

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=owned_prefix(f".{path.name}-"), suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class Match:
    """A correspondence between the features of two SAEs A (width F_a) and B (width F_b).

    ``permutation`` (F_a,) int64: feature ``i`` of A is matched to feature ``permutation[i]`` of B.
    ``cost`` (F_a,) float64: squared Euclidean distance between the matched parameter vectors
    (folded parameters when ``folded``; for a composed match, the sum of the step costs).
    ``weights``: which parameters were compared (``"decoder"``, ``"encoder"``, ``"all"``).

    ``width_b``: F_b, or ``None`` when F_b = F_a (a one-to-one match: ``permutation`` is a
    permutation of ``0..F-1``). When the widths differ the match is *rectangular*: every feature
    of the smaller SAE has exactly one partner in the larger one, so ``min(F_a, F_b)`` entries of
    ``permutation`` are distinct indices into B; when F_a > F_b the other ``F_a − F_b`` features
    of A are unmatched, with ``permutation[i] = -1`` and ``cost[i] = nan``. When F_a < F_b, the
    ``F_b − F_a`` features of B that no entry names are the unmatched ones.
    """

    permutation: np.ndarray
    cost: np.ndarray
    folded: bool = True
    weights: str = "all"
    width_b: int | None = None

    def __post_init__(self) -> None:
        if self.width_b is None or self.width_b == len(np.asarray(self.permutation)):
            perm = _check_permutation(self.permutation)
            object.__setattr__(self, "width_b", None)
        else:
            check_int("width_b", self.width_b, 1)
            perm = _check_partners(self.permutation, self.width_b)
        cost = np.asarray(self.cost, dtype=np.float64)
        if cost.shape != perm.shape:
            raise ValueError(f"cost must have shape {perm.shape} like the permutation, got {cost.shape}")
        object.__setattr__(self, "permutation", perm)
        object.__setattr__(self, "cost", cost)

    @property
    def size(self) -> int:
        """F_a, the number of features of A."""
        return len(self.permutation)

    @property
    def widths(self) -> tuple[int, int]:
        """``(F_a, F_b)``."""
        return self.size, self.size if self.width_b is None else self.width_b

    @property
    def rectangular(self) -> bool:
        """Whether A and B have different widths."""
        return self.width_b is not None

    def inverse(self) -> Match:
        """The match from B to A."""
        if self.rectangular:
            matched = np.flatnonzero(self.permutation >= 0)
            inv = np.full(self.width_b, -1, dtype=np.int64)
            inv[self.permutation[matched]] = matched
            cost = np.full(self.width_b, np.nan)
            cost[self.permutation[matched]] = self.cost[matched]
            return Match(inv, cost, self.folded, self.weights, width_b=self.size)
        inv = np.argsort(self.permutation)
        return Match(inv, self.cost[inv], self.folded, self.weights)

    def transfer(self, acts: Tensor) -> Tensor:
        """Move feature activations ``(..., F_a)`` of A into B's feature order ``(..., F_b)``: the
        result's column ``permutation[i]`` is ``acts[..., i]`` (for a rectangular match, B's
        unmatched columns are 0 and A's unmatched features are dropped)."""
        if acts.shape[-1] != self.size:
            raise ValueError(f"acts must have {self.size} features in the last axis, got {tuple(acts.shape)}")
        if self.rectangular:
            matched = np.flatnonzero(self.permutation >= 0)
            out = acts.new_zeros((*acts.shape[:-1], self.width_b))
            out[..., torch.as_tensor(self.permutation[matched], device=acts.device)] = \
                acts[..., torch.as_tensor(matched, device=acts.device)]
            return out
        inv = torch.as_tensor(np.argsort(self.permutation), device=acts.device)
        return acts[..., inv]

    def agreement(self, other: Match) -> float:
        """Fraction of A's features that ``other`` sends to the same partner."""
        if other.widths != self.widths:
            raise ValueError(f"matches must have the same widths, got {self.widths} and {other.widths}")
        return float(np.mean(self.permutation == other.permutation))

    def save(self, path: str | Path, metadata: dict | None = None) -> Path:
        """Write the match to ``path`` (a ``.json`` file) and its arrays next to it (same name,
        ``.npz``); return the JSON path. Both files are written atomically (temporary file, then
        rename), the arrays first, so an existing JSON always names complete arrays.

        Format (version 1): the JSON holds ``format`` (``"esae.sae_match.Match"``), ``version``,
        ``arrays`` (the .npz file name, relative to the JSON), ``width_a``, ``width_b``,
        ``folded``, ``weights``, ``n_matched``, ``mean_cost`` (over matched features) and
        ``metadata`` (``metadata``, any JSON-serialisable dict, e.g. the SAEs' names or paths);
        the .npz holds ``permutation`` (F_a,) int64 (partner in B, -1 when unmatched) and
        ``cost`` (F_a,) float64 (nan when unmatched)."""
        import json

        path = Path(path)
        if path.suffix != ".json":
            raise ValueError(f"path must end in .json, got {str(path)!r}")
        arrays = path.with_suffix(".npz")
        matched = self.permutation >= 0
        header = {"format": MATCH_FORMAT, "version": MATCH_FORMAT_VERSION, "arrays": arrays.name,
                  "width_a": self.widths[0], "width_b": self.widths[1], "folded": bool(self.folded),
                  "weights": self.weights, "n_matched": int(matched.sum()),
                  "mean_cost": float(self.cost[matched].mean()) if matched.any() else None,
                  "metadata": dict(metadata or {})}
        text = json.dumps(header, indent=2, allow_nan=False)  # fails before anything is written
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(arrays, lambda f: np.savez(f, permutation=self.permutation, cost=self.cost), "wb")
        _write_atomic(path, lambda f: f.write(text + "\n"), "w")
        return path

    @staticmethod
    def read_header(path: str | Path) -> dict:
        """The JSON header of a saved match (see :meth:`save`), checked for format and version."""
        import json

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"path must be a match saved by Match.save (a .json file), got {str(path)!r}")
        header = json.loads(path.read_text())
        if header.get("format") != MATCH_FORMAT or header.get("version") != MATCH_FORMAT_VERSION:
            raise ValueError(f"{str(path)!r} must be format {MATCH_FORMAT!r} version {MATCH_FORMAT_VERSION}, got "
                             f"{header.get('format')!r} version {header.get('version')!r}")
        return header

    @classmethod
    def load(cls, path: str | Path) -> Match:
        """Read a match written by :meth:`save` (the ``.json`` path); its metadata is in
        :meth:`read_header`."""
        path = Path(path)
        header = cls.read_header(path)
        with np.load(path.parent / header["arrays"]) as z:
            perm, cost = z["permutation"], z["cost"]
        if len(perm) != header["width_a"]:
            raise ValueError(f"{str(path)!r}: arrays hold {len(perm)} features, header says {header['width_a']}")
        width_b = None if header["width_b"] == header["width_a"] else int(header["width_b"])
        return cls(perm, cost, bool(header["folded"]), header["weights"], width_b=width_b)


def compose(match_ab: Match, match_bc: Match) -> Match:
    """The match A → C obtained by following A → B then B → C: ``π_AC = π_BC[π_AB]``. Its
    cost is the sum of the two step costs of each chain (not the direct A–C distance).
    Only one-to-one matches compose: a rectangular match (SAEs of different widths) is refused."""
    for name, m in (("match_ab", match_ab), ("match_bc", match_bc)):
        if m.rectangular:
            raise ValueError(f"{name} must be a one-to-one match of SAEs of equal width to compose, got a rectangular "
                             f"match of widths {m.widths}")
    if match_ab.size != match_bc.size:
        raise ValueError(f"matches must have the same size to compose, got {match_ab.size} and {match_bc.size}")
    perm = match_bc.permutation[match_ab.permutation]
    weights = match_ab.weights if match_ab.weights == match_bc.weights else "mixed"
    return Match(perm, match_ab.cost + match_bc.cost[match_ab.permutation], match_ab.folded and match_bc.folded,
                 weights)


def chain(matches: Sequence[Match]) -> Match:
    """Compose a chain of matches ``[A→B, B→C, ...]`` into the match from the first SAE to the last."""
    if len(matches) == 0:
        raise ValueError("matches must hold at least one Match")
    out = matches[0]
    for nxt in matches[1:]:
        out = compose(out, nxt)
    return out


def _check_pair(sae_a, sae_b) -> None:
    _check_matchable(sae_a, "sae_a"), _check_matchable(sae_b, "sae_b")
    if sae_a.cfg.d_in != sae_b.cfg.d_in:
        raise ValueError(f"sae_a and sae_b must read inputs of the same size (d_in), got {sae_a.cfg.d_in} and "
                         f"{sae_b.cfg.d_in}")


def feature_vectors(sae: JumpReLUSAE, weights: str = "all", *, folded: bool = False) -> Tensor:
    """One parameter vector per feature, ``(F, D)``: the decoder row (``"decoder"``, D = d),
    the encoder column and bias (``"encoder"``, D = d + 1), or both (``"all"``, D = 2d + 1),
    of ``sae`` or, with ``folded``, of :func:`fold` ``(sae)`` (without building it).
    ``b_dec`` is left out: it does not depend on the order of the features.

    ``sae`` may also be a sae-lens TopK or standard (ReLU) SAE: these have no thresholds, so
    folding is the identity for them (``folded`` changes nothing) and their vectors are built
    from ``W_enc``, ``b_enc`` and ``W_dec`` as they are."""
    check_choice("weights", weights, WEIGHTS)
    sae = _check_matchable(sae)
    if folded and isinstance(sae, JumpReLUSAE):
        p = folded_parts(sae)
        W_enc, b_enc, W_dec = p["W_enc"], p["b_enc"], p["W_dec"]
    else:
        W_enc, W_dec = sae.W_enc, sae.W_dec
        b_enc = sae.b_enc - sae.b_dec @ sae.W_enc if sae.cfg.apply_b_dec_to_input else sae.b_enc
    parts = []
    if weights in ("decoder", "all"):
        parts.append(W_dec)
    if weights in ("encoder", "all"):
        parts += [W_enc.T, b_enc[:, None]]
    return torch.cat(parts, dim=1).detach()


@torch.no_grad()
def cost_matrix(vectors_a: Tensor, vectors_b: Tensor, *, block_size: int = 2048,
                dtype: torch.dtype = torch.float32) -> np.ndarray:
    """Squared distances ``C[i, j] = ‖a_i − b_j‖²`` between rows of ``vectors_a`` (F, D) and
    ``vectors_b`` (F, D), as a float64 NumPy array (F, F).

    Built ``block_size`` rows at a time from ``‖a‖² + ‖b‖² − 2 a·b`` (one matrix product per
    block, on the vectors' device, in ``dtype``), so memory beyond the result stays at
    ``block_size × F`` numbers: a 16k × 16k problem needs its 2 GiB result and little else."""
    check_int("block_size", block_size, 1)
    a, b = vectors_a.to(dtype), vectors_b.to(dtype)
    na, nb = a.pow(2).sum(1), b.pow(2).sum(1)
    out = np.empty((a.shape[0], b.shape[0]), dtype=np.float64)
    bt = b.T.contiguous()
    for start in range(0, a.shape[0], block_size):
        stop = min(start + block_size, a.shape[0])
        block = torch.addmm(na[start:stop, None] + nb[None, :], a[start:stop], bt, alpha=-2.0)
        out[start:stop] = block.clamp_min_(0).cpu().numpy()
    return out


def _negative_inner_products(a: Tensor, b: Tensor, block_size: int) -> np.ndarray:
    """``−a b^T`` (F, F) as float64 NumPy (see :func:`esae.assignment.negative_inner_products`)."""
    return assignment.negative_inner_products(a, b, block_size)


CANDIDATES = ("auto", "sketch", "full")
#: Below this width the rescoring's gathers (memory-bound, ∝ F) cost about what the sketch saves
#: in a float candidate pass (∝ F²): measured crossover ≈ 20k features at d = 2304 on a 2-core
#: EPYC. An int8 pass is never sketched by ``"auto"``: at 65k features the sketch took 206 s
#: (peak 7.9 GiB) against the full int8 pass's 189 s (6.5 GiB).
SKETCH_MIN_WIDTH = 32768


def candidate_sketch(va: Tensor, vb: Tensor, d: int, share: float = 0.75) -> slice | None:
    """For ``weights="all"`` vectors (F, 2d + 1), ``[W_dec | W_enc^T | b_enc]``: the part
    (decoder rows ``[:d]`` or encoder columns and bias ``[d:]``) that holds at least ``share``
    of both SAEs' summed squared norm, or ``None`` if neither does. The inner products that the
    assignment maximises are then mostly that part's, so the sparse solver can find its
    candidates there (:func:`esae.assignment.knn_candidates`, ``sketch``). After folding, the
    decoder part dominates trained SAEs by orders of magnitude (θ carries the stream's scale)."""
    dec = float(va[:, :d].float().pow(2).sum() + vb[:, :d].float().pow(2).sum())
    enc = float(va[:, d:].float().pow(2).sum() + vb[:, d:].float().pow(2).sum())
    total = dec + enc
    if total <= 0:
        return None
    return slice(0, d) if dec >= share * total else slice(d, None) if enc >= share * total else None


@torch.no_grad()
def match(sae_a: JumpReLUSAE, sae_b: JumpReLUSAE, *, fold: bool = True, weights: str = "all",
          solver: str = "exact", k: int = 8, block_size: int = 2048, candidates: str = "auto") -> Match:
    """Match the features of ``sae_a`` to those of ``sae_b`` (same ``d_in`` and ``d_sae``).

    With ``fold=True`` (the paper's method) both SAEs are folded first (:func:`fold`). The cost
    of pairing feature ``i`` of A with ``j`` of B is the squared distance between their
    parameter vectors (:func:`feature_vectors`; ``weights`` picks decoder, encoder+bias or all),
    and the permutation minimising the total cost is found by ``solver``: ``"exact"``, SciPy's
    ``linear_sum_assignment`` on the dense (F, F) matrix of negative inner products (the
    squared norms add the same total to every permutation; float32 products, float64 matrix:
    2 GiB at Gemma Scope's 16k width), or ``"sparse"``, the exact optimum over each feature's
    ``k`` nearest candidates plus a fallback permutation, solved by OR-Tools
    (:func:`esae.assignment.sparse_assignment`: 14 s for two unrelated 16k SAEs on two CPU cores).
    For the sparse solver with all weights, ``candidates="sketch"`` finds the candidates on the
    part of the vectors that holds most of their squared norm (:func:`candidate_sketch`; about
    half the work of the candidate pass) and keeps the best by full-vector cosine; ``"full"``
    uses every coordinate; ``"auto"`` sketches from :data:`SKETCH_MIN_WIDTH` features on when the
    pass runs in floating point (:func:`esae.assignment.candidate_dtype`), never in int8. Returns a :class:`Match` whose ``cost`` is recomputed per
    pair in float64.

    TopK and standard (ReLU) sae-lens SAEs are accepted too: they have no thresholds, so
    folding is the identity for them and they are matched on ``W_enc``, ``b_enc`` and ``W_dec``
    as they are (see :func:`feature_vectors`).

    SAEs of different widths (``d_sae``) get a rectangular match (:func:`match_rectangular`,
    ``solver="exact"`` only): every feature of the smaller SAE gets a partner in the larger one.
    """
    check_choice("weights", weights, WEIGHTS)
    check_choice("solver", solver, assignment.SOLVERS)
    _check_pair(sae_a, sae_b)
    if sae_a.cfg.d_sae != sae_b.cfg.d_sae:
        if solver != "exact":
            raise ValueError(f"solver must be 'exact' for SAEs of different widths (d_sae {sae_a.cfg.d_sae} and "
                             f"{sae_b.cfg.d_sae}), got {solver!r}")
        return match_rectangular(sae_a, sae_b, fold=fold, weights=weights, block_size=block_size)
    check_choice("candidates", candidates, CANDIDATES)
    va = feature_vectors(sae_a, weights, folded=fold)
    vb = feature_vectors(sae_b, weights, folded=fold)
    F, D = va.shape
    use = candidates == "sketch" or (candidates == "auto" and F >= SKETCH_MIN_WIDTH
                                     and assignment.candidate_dtype("auto", va.device, F * F * D) != torch.int8)
    sketch = candidate_sketch(va, vb, sae_a.cfg.d_in) if solver == "sparse" and weights == "all" and use else None
    perm = assignment.assign(va, vb, solver, k, block_size, sketch=sketch)
    exact = np.concatenate([(va[s:s + block_size].double() - vb[torch.as_tensor(perm[s:s + block_size],
                                                                                  device=vb.device)].double())
                            .pow(2).sum(1).cpu().numpy() for s in range(0, len(perm), block_size)])
    return Match(perm, exact, folded=fold, weights=weights)


@torch.no_grad()
def match_rectangular(sae_a, sae_b, *, fold: bool = True, weights: str = "all", block_size: int = 2048) -> Match:
    """Match SAEs of any widths F_a, F_b: the injective assignment of the smaller SAE's features
    into the larger one's minimising the summed squared distance between matched parameter
    vectors (:func:`feature_vectors`, folded when ``fold``), by SciPy's
    ``linear_sum_assignment`` on the dense (F_a, F_b) float64 matrix of squared distances
    (products in float32; unlike the square case the squared norms matter, since which features
    of the larger SAE take part depends on the assignment). Memory: 8·F_a·F_b bytes (8.6 GB at
    16k ↔ 65k). Returns a :class:`Match` with ``width_b = F_b`` (see there for the layout)."""
    check_choice("weights", weights, WEIGHTS)
    _check_pair(sae_a, sae_b)
    va = feature_vectors(sae_a, weights, folded=fold)
    vb = feature_vectors(sae_b, weights, folded=fold)
    scores = 2.0 * assignment.negative_inner_products(va, vb, block_size)
    scores += va.double().pow(2).sum(1).cpu().numpy()[:, None]
    scores += vb.double().pow(2).sum(1).cpu().numpy()[None, :]
    rows, cols = linear_sum_assignment(scores)
    del scores
    perm = np.full(va.shape[0], -1, dtype=np.int64)
    perm[rows] = cols
    cost = np.full(va.shape[0], np.nan)
    r, c = (torch.as_tensor(x, device=va.device) for x in (rows, cols))
    cost[rows] = (va[r].double() - vb[c].double()).pow(2).sum(1).cpu().numpy()
    return Match(perm, cost, folded=fold, weights=weights, width_b=sae_b.cfg.d_sae)


def match_layers(saes: Sequence[JumpReLUSAE], **kwargs) -> list[Match]:
    """Match every adjacent pair of a stack of SAEs: ``[match(saes[0], saes[1]), ...]``."""
    if len(saes) < 2:
        raise ValueError(f"saes must hold at least two SAEs to match, got {len(saes)}")
    return [match(a, b, **kwargs) for a, b in zip(saes[:-1], saes[1:])]


# --------------------------------------------------------------------------------------------
# Training JumpReLU SAEs with sae-lens
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainConfig:
    """How one JumpReLU SAE is trained with sae-lens's ``SAETrainer`` (see :func:`train_jumprelu`)."""

    d_sae: int = 1024  # number of features
    target_l0: float = 32.0  # L0 the thresholds start at; the "quadratic" penalty also pulls towards it
    l0_coefficient: float = 1.0  # weight of the sparsity penalty
    sparsity_loss: str = "quadratic"  # "step": λ·L0 (Gemma Scope); "quadratic": λ·2/T·(L0 − T)² (Gemma Scope 2)
    steps: int = 1000  # optimiser steps
    batch_size: int = 1024  # activations per step
    lr: float = 1e-3  # Adam learning rate (linear warm-up over 5% of steps, decay over the last 20%)
    decoder_init_norm: float = 0.1  # norm of the initial decoder rows (the encoder starts as their transpose)
    bandwidth: float = 0.05  # width of the straight-through estimator's rectangle window
    autocast: bool = False  # bfloat16 autocast of the SAE's matrix products
    seed: int = 0

    def __post_init__(self) -> None:
        check_int("d_sae", self.d_sae, 2)
        check_float("target_l0", self.target_l0, 0.0, float(self.d_sae), lo_open=True)
        check_float("l0_coefficient", self.l0_coefficient, 0.0, lo_open=True)
        check_choice("sparsity_loss", self.sparsity_loss, ("step", "quadratic"))
        check_int("steps", self.steps, 1)
        check_int("batch_size", self.batch_size, 1)
        check_float("lr", self.lr, 0.0, 1.0, lo_open=True)
        check_float("decoder_init_norm", self.decoder_init_norm, 0.0, lo_open=True)
        check_float("bandwidth", self.bandwidth, 0.0, lo_open=True)
        check_int("seed", self.seed, 0)


def _batches(data: Tensor, batch_size: int, generator: torch.Generator):
    """Endless shuffled minibatches ``(batch_size, d)`` of the rows of ``data`` (an sae-lens DataProvider)."""
    n = data.shape[0]
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):
            yield data[order[start:start + batch_size]]
        if n < batch_size:
            yield data[torch.randint(n, (batch_size,), generator=generator)]


def train_jumprelu(data: Tensor, cfg: TrainConfig, device: torch.device | str = "cpu") -> JumpReLUSAE:
    """Train a JumpReLU SAE on activations ``data`` (n, d) with sae-lens's ``SAETrainer``; return
    it as an inference ``JumpReLUSAE`` that reads raw activations.

    The input is first scaled to mean norm ``sqrt(d)`` (sae-lens's ``expected_average_only_in``
    normalisation, done here so the scale is known), so the same hyperparameters serve layers
    whose residual norms differ by orders of magnitude. After training the scale ``s`` is
    folded back the way Gemma Scope's released SAEs are parametrised: encoder bias, thresholds
    and decoder bias are divided by ``s`` (pre-activations and θ in the raw units of the
    residual stream, so θ grows with the layer's norm), ``W_enc`` and ``W_dec`` unchanged. This
    is one of the function-preserving choices (sae-lens's trainer instead moves ``s`` into
    ``W_enc`` and ``1/s`` into ``W_dec``); folded matching does not depend on the choice.
    Finally every decoder row is rescaled to unit norm (:func:`unit_decoder_rows`), the
    constraint Gemma Scope trains under, so unfolded weights mean what they mean there.

    Training starts from the data: ``b_dec`` at the mean (the encoder sees centred inputs) and
    each threshold at the value where its feature fires on a fraction ``target_l0 / d_sae`` of a
    sample, so that a few hundred steps suffice and no feature starts dead. The returned SAE's
    encoder reads the input directly (``apply_b_dec_to_input=False``, the centring absorbed into
    ``b_enc``), as in Gemma Scope.
    """
    from unittest import mock

    from sae_lens import JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig, SAETrainer
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.training import sae_trainer

    from esae.runtime import progress

    if data.ndim != 2 or data.shape[0] < 2:
        raise ValueError(f"data must be (n, d) activations with n >= 2, got shape {tuple(data.shape)}")
    device = torch.device(device)
    data = data.float()
    scale = float(data.shape[1] ** 0.5 / data.norm(dim=1).mean())
    torch.manual_seed(cfg.seed)
    sae_cfg = JumpReLUTrainingSAEConfig(
        d_in=data.shape[1], d_sae=cfg.d_sae, device=str(device), apply_b_dec_to_input=True,
        normalize_activations="none", jumprelu_sparsity_loss_mode=cfg.sparsity_loss,
        target_l0=cfg.target_l0 if cfg.sparsity_loss == "quadratic" else None,
        l0_coefficient=cfg.l0_coefficient, jumprelu_init_threshold=1.0, jumprelu_bandwidth=cfg.bandwidth,
        decoder_init_norm=cfg.decoder_init_norm)
    training_sae = JumpReLUTrainingSAE(sae_cfg)
    with torch.no_grad():  # data-dependent start: b_dec at the mean, each feature firing at the target rate
        gen = torch.Generator().manual_seed(cfg.seed)
        sample = data[torch.randperm(data.shape[0], generator=gen)[:4096]].to(device) * scale
        training_sae.b_dec.copy_(sample.mean(0))
        pre = (sample - training_sae.b_dec) @ training_sae.W_enc + training_sae.b_enc
        rate = min(cfg.target_l0 / cfg.d_sae, 1.0)
        training_sae.threshold.copy_(torch.quantile(pre, 1 - rate, dim=0).clamp_min(1e-3))
    warm_up, decay = max(cfg.steps // 20, 1), cfg.steps // 5
    trainer_cfg = SAETrainerConfig(
        total_training_samples=cfg.steps * cfg.batch_size, train_batch_size_samples=cfg.batch_size, lr=cfg.lr,
        lr_end=cfg.lr, lr_warm_up_steps=warm_up, lr_decay_steps=decay, device=str(device), autocast=cfg.autocast,
        dead_feature_window=max(cfg.steps // 4, 1), feature_sampling_window=max(cfg.steps, 1),
        logger=LoggingConfig(log_to_wandb=False))
    generator = torch.Generator().manual_seed(cfg.seed)
    provider = (batch.to(device) * scale for batch in _batches(data, cfg.batch_size, generator))
    trainer = SAETrainer(cfg=trainer_cfg, sae=training_sae, data_provider=provider)
    # sae-lens draws its own tqdm bar; route it through esae's (silenced in book builds)
    with mock.patch.object(sae_trainer, "tqdm", lambda *a, **k: progress(*a, **k)), torch.enable_grad():
        trainer.fit()
    state = {k: v.detach().float() for k, v in training_sae.state_dict().items()}
    # the trainer projects θ onto θ >= 0 before every step; finish the projection after the last one
    state["threshold"] = state["threshold"].clamp_min(0)
    b_enc = state["b_enc"] - state["b_dec"] @ state["W_enc"]  # the encoder reads x directly from now on
    inference_cfg = JumpReLUSAEConfig.from_dict(training_sae.cfg.get_inference_sae_cfg_dict())
    inference_cfg.device = str(device)
    template = JumpReLUSAE(inference_cfg)
    raw = build_jumprelu(template, W_enc=state["W_enc"], b_enc=b_enc / scale, threshold=state["threshold"] / scale,
                         W_dec=state["W_dec"], b_dec=state["b_dec"] / scale, apply_b_dec_to_input=False)
    return unit_decoder_rows(raw)


@torch.no_grad()
def unit_decoder_rows(sae: JumpReLUSAE) -> JumpReLUSAE:
    """The same function in Gemma Scope's parametrisation: every decoder row rescaled to unit
    norm, its norm moved into the encoder column, ``b_enc`` and θ (:func:`rescale_features`).
    With raw-unit inputs this leaves θ and ``b_enc`` carrying the residual stream's scale, as in
    the released Gemma Scope SAEs. Rows that are exactly zero are left alone."""
    sae = _check_jumprelu(sae)
    norms = sae.W_dec.double().norm(dim=1)
    return rescale_features(sae, torch.where(norms > 0, norms, torch.ones_like(norms)).to(sae.W_dec.dtype))


@torch.no_grad()
def sae_quality(sae: JumpReLUSAE, acts: Tensor, batch_size: int = 4096) -> dict[str, float]:
    """L0 (mean number of active features per input), explained variance
    ``1 − Σ‖x − x̂‖² / Σ‖x − x̄‖²`` and the fraction of features that never fire, on ``acts`` (n, d)."""
    sq_err = total = l0 = 0.0
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool, device=sae.W_enc.device)
    mean = acts.double().mean(0).to(sae.W_enc.device)
    for start in range(0, acts.shape[0], batch_size):
        x = acts[start:start + batch_size].to(sae.W_enc.device, sae.W_enc.dtype)
        z = sae.encode(x)
        x_hat = sae.decode(z)
        sq_err += float((x - x_hat).double().pow(2).sum())
        total += float((x.double() - mean).pow(2).sum())
        l0 += float((z > 0).sum())
        fired |= (z > 0).any(0)
    return {"l0": l0 / acts.shape[0], "explained_variance": 1 - sq_err / total,
            "dead_fraction": float((~fired).float().mean())}


# --------------------------------------------------------------------------------------------
# Ground truth: SAEs whose true correspondence is known
# --------------------------------------------------------------------------------------------

@torch.no_grad()
def random_jumprelu(d: int, d_sae: int, *, seed: int = 0, dtype: str = "float64",
                    apply_b_dec_to_input: bool = True) -> JumpReLUSAE:
    """A random sae-lens JumpReLU SAE (standard-normal weights, no gradients) whose thresholds
    cover every case folding must handle: positive, zero (the first eighth of the features) and
    negative (the second eighth, at −0.5)."""
    check_int("d", d, 1)
    check_int("d_sae", d_sae, 1)
    g = torch.Generator().manual_seed(seed)
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d, d_sae=d_sae, dtype=dtype, apply_b_dec_to_input=apply_b_dec_to_input))
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
        sae.threshold.copy_(sae.threshold.abs() * 2)
        sae.threshold[: d_sae // 8] = 0.0
        sae.threshold[d_sae // 8: d_sae // 4] = -0.5
    return sae.requires_grad_(False)


def perturbed_copy(sae: JumpReLUSAE, *, noise: float = 0.0, scale_spread: float = 1.0,
                   seed: int = 0) -> tuple[JumpReLUSAE, np.ndarray]:
    """A copy of ``sae`` whose true correspondence is known: Gaussian noise of ``noise`` × each
    tensor's RMS added to ``W_enc``, ``b_enc`` and ``W_dec`` (θ multiplied by
    ``exp(noise · N(0, 1))``), every feature rescaled by a factor log-uniform in
    ``[1/scale_spread, scale_spread]`` (which leaves the function unchanged) and the features
    shuffled. Returns ``(copy, truth)`` with ``truth[i]`` the index in the copy of feature ``i``."""
    check_float("noise", noise, 0.0)
    check_float("scale_spread", scale_spread, 1.0)
    sae = _check_jumprelu(sae)
    gen = torch.Generator().manual_seed(seed)

    def noisy(t: Tensor) -> Tensor:
        rms = t.pow(2).mean().sqrt()
        return t + noise * rms * torch.randn(t.shape, generator=gen, dtype=t.dtype).to(t.device)

    theta = sae.threshold * torch.exp(noise * torch.randn(sae.cfg.d_sae, generator=gen)).to(sae.threshold)
    copy_ = build_jumprelu(sae, W_enc=noisy(sae.W_enc), b_enc=noisy(sae.b_enc), threshold=theta,
                           W_dec=noisy(sae.W_dec), b_dec=sae.b_dec)
    log_spread = float(np.log(scale_spread))
    scale = torch.exp((2 * torch.rand(sae.cfg.d_sae, generator=gen) - 1) * log_spread)
    copy_ = rescale_features(copy_, scale)
    order = torch.randperm(sae.cfg.d_sae, generator=gen).numpy()  # new feature j = old feature order[j]
    return permute_features(copy_, order), np.argsort(order)


def recovery(m: Match, truth: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Fraction of A's features whose match is the true partner ``truth[i]``, over the
    features where ``valid`` (default: all with ``truth >= 0``)."""
    truth = np.asarray(truth)
    valid = truth >= 0 if valid is None else np.asarray(valid) & (truth >= 0)
    if not valid.any():
        raise ValueError("recovery needs at least one feature with a known true partner")
    return float(np.mean(m.permutation[valid] == truth[valid]))


@dataclass(frozen=True)
class SyntheticLayersConfig:
    """Synthetic "layers" whose true features evolve in a known way (``sae_lens.synthetic``).

    Layer 0's dictionary holds ``n_features`` unit vectors in ``d`` dimensions (made nearly
    orthogonal by sae-lens's initializer). From one layer to the next every feature direction
    is nudged by Gaussian noise of relative size ``drift`` and renormalised, the overall scale
    of the activations grows by ``norm_growth`` (as residual streams do with depth), and each
    feature's firing magnitude is multiplied by a factor ``exp(magnitude_jitter · N(0, 1))``.
    Features fire independently with probability ``firing_probability``."""

    n_layers: int = 4
    d: int = 64
    n_features: int = 128
    firing_probability: float = 0.03
    drift: float = 0.15
    norm_growth: float = 3.0
    magnitude_jitter: float = 0.3
    n_samples: int = 100_000  # activations per layer to train each SAE on
    train: TrainConfig = TrainConfig(d_sae=128, target_l0=3.84, l0_coefficient=0.3, steps=2000, batch_size=512,
                                     lr=2e-3)
    seed: int = 0
    version: int = 2  # 2: decoder rows of unit norm (Gemma Scope convention)

    def __post_init__(self) -> None:
        check_int("n_layers", self.n_layers, 2)
        check_int("d", self.d, 2)
        check_int("n_features", self.n_features, 2)
        check_float("firing_probability", self.firing_probability, 0.0, 1.0, lo_open=True)
        check_float("drift", self.drift, 0.0)
        check_float("norm_growth", self.norm_growth, 0.0, lo_open=True)
        check_float("magnitude_jitter", self.magnitude_jitter, 0.0)
        check_int("n_samples", self.n_samples, 2)
        if self.train.d_sae != self.n_features:
            raise ValueError(f"train.d_sae must equal n_features ({self.n_features}) so every true feature can "
                             f"have one SAE feature, got {self.train.d_sae}")


@dataclass
class SyntheticLayers:
    """The ground truth of :func:`synthetic_layers`: per layer, the true feature directions
    ``dictionaries[t]`` (K, d), mean firing magnitudes ``magnitudes[t]`` (K,), the SAE trained
    on that layer, and ``truth[t]`` (F,): the true feature each SAE feature represents (-1 if
    none is clear)."""

    dictionaries: list[Tensor]
    magnitudes: list[Tensor]
    saes: list[JumpReLUSAE]
    truth: list[np.ndarray]

    def true_match(self, t: int, u: int) -> np.ndarray:
        """For each feature of SAE ``t``, the feature of SAE ``u`` representing the same true
        feature (-1 when either side has none)."""
        where_u = {int(k): j for j, k in enumerate(self.truth[u]) if k >= 0}
        return np.array([where_u.get(int(k), -1) if k >= 0 else -1 for k in self.truth[t]])


def _layer_generators(cfg: SyntheticLayersConfig):
    from sae_lens.synthetic import ActivationGenerator, FeatureDictionary

    gen = torch.Generator().manual_seed(cfg.seed)
    with torch.enable_grad():  # sae-lens makes the directions nearly orthogonal by gradient descent
        base = FeatureDictionary(cfg.n_features, cfg.d, seed=cfg.seed)
    vectors = base.feature_vectors.detach().clone()
    magnitudes = torch.ones(cfg.n_features)
    layers = []
    for t in range(cfg.n_layers):
        if t > 0:
            vectors = vectors + cfg.drift * torch.randn(vectors.shape, generator=gen) / cfg.d ** 0.5
            vectors = vectors / vectors.norm(dim=1, keepdim=True)
            magnitudes = magnitudes * cfg.norm_growth * torch.exp(
                cfg.magnitude_jitter * torch.randn(cfg.n_features, generator=gen))
        dictionary = FeatureDictionary(cfg.n_features, cfg.d, initializer=None, seed=cfg.seed + t)
        dictionary.feature_vectors.data = vectors.clone()
        acts = ActivationGenerator(cfg.n_features, cfg.firing_probability, std_firing_magnitudes=0.25 * magnitudes,
                                   mean_firing_magnitudes=magnitudes.clone())
        layers.append((dictionary, acts, vectors.clone(), magnitudes.clone()))
    return layers


def identify_features(sae: JumpReLUSAE, dictionary: Tensor, min_cosine: float = 0.9) -> np.ndarray:
    """For each SAE feature, the true feature (row of ``dictionary`` (K, d)) its decoder row
    represents: an optimal one-to-one assignment by cosine similarity, kept where the cosine
    is at least ``min_cosine`` (-1 elsewhere). Returns (F,) int64."""
    dec = torch.nn.functional.normalize(sae.W_dec.detach().double().cpu(), dim=1)
    true = torch.nn.functional.normalize(dictionary.double().cpu(), dim=1)
    cos = (dec @ true.T).numpy()
    rows, cols = linear_sum_assignment(-cos)
    truth = np.full(sae.cfg.d_sae, -1, dtype=np.int64)
    keep = cos[rows, cols] >= min_cosine
    truth[rows[keep]] = cols[keep]
    return truth


def synthetic_layers(cfg: SyntheticLayersConfig, device: torch.device | str = "cpu",
                     store: Store | None = None) -> SyntheticLayers:
    """Generate the synthetic layers of ``cfg``, train one JumpReLU SAE per layer with sae-lens
    (:func:`train_jumprelu`, seeded per layer) and identify which true feature each SAE feature
    represents. The SAEs are kept in ``store`` (e.g. :mod:`esae.cache`) keyed by ``cfg``."""

    layers = _layer_generators(cfg)

    def compute() -> list[dict[str, Tensor]]:
        states = []
        for t, (dictionary, acts, _, _) in enumerate(layers):
            torch.manual_seed(cfg.seed + 1000 * t)
            with torch.no_grad():
                data = dictionary(acts.sample(cfg.n_samples))
            sae = train_jumprelu(data, dataclasses.replace(cfg.train, seed=cfg.train.seed + t), device)
            states.append({k: v.detach().cpu() for k, v in sae.state_dict().items()})
        return states

    states = store_or_none(store).cached_torch("sae_match_synthetic", cfg, compute)
    template = JumpReLUSAE(JumpReLUSAEConfig(d_in=cfg.d, d_sae=cfg.n_features, apply_b_dec_to_input=False))
    saes = [build_jumprelu(template, **state) for state in states]
    saes = [sae.to(device) for sae in saes]
    dictionaries = [v for _, _, v, _ in layers]
    return SyntheticLayers(dictionaries, [m for _, _, _, m in layers], saes,
                           [identify_features(sae, v) for sae, v in zip(saes, dictionaries)])


def synthetic_data(cfg: SyntheticLayersConfig, layer: int, n: int, seed: int = 12345) -> Tensor:
    """``n`` fresh activations (n, d) from synthetic layer ``layer`` (for evaluating its SAE)."""
    check_int("layer", layer, 0, cfg.n_layers - 1)
    dictionary, acts, _, _ = _layer_generators(cfg)[layer]
    torch.manual_seed(seed)
    with torch.no_grad():
        return dictionary(acts.sample(n))


# --------------------------------------------------------------------------------------------
# Evaluations that need only SAEs and activations
# --------------------------------------------------------------------------------------------

PARTS = ("W_dec", "W_enc", "b_enc")


def _part_slices(d: int) -> dict[str, slice]:
    """Where each parameter sits in an ``"all"`` feature vector of :func:`feature_vectors`."""
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


@torch.no_grad()
def growing_norm_pair(d: int = 64, d_sae: int = 256, *, norm: float = 50.0, growth: float = 2.0, jitter: float = 0.2,
                      noise: float = 0.02, seed: int = 0) -> tuple[JumpReLUSAE, JumpReLUSAE, np.ndarray]:
    """Two SAEs in Gemma Scope's raw-unit parametrisation on consecutive "layers" whose hidden
    states grow (the paper's Figure 2 scenario), with a known correspondence.

    Layer A: unit decoder rows, encoder columns equal to them, thresholds ``norm·(1 + 0.1 N)``
    and ``b_enc = −norm·U(0.5, 1.5)`` (the residual stream's scale). Layer B holds the same
    features, each grown by its own factor ``g_i = growth · exp(jitter · N)``: a feature that
    writes ``g_i`` times larger fires at a ``g_i`` times larger threshold and bias, its unit
    decoder and encoder directions unchanged (up to ``noise``); its features are shuffled.
    Returns ``(A, B, truth)`` with ``truth[i]`` the index in B of A's feature ``i``."""
    check_int("d", d, 2)
    check_int("d_sae", d_sae, 2)
    check_float("norm", norm, 0.0, lo_open=True)
    check_float("growth", growth, 0.0, lo_open=True)
    gen = torch.Generator().manual_seed(seed)
    w_dec = torch.nn.functional.normalize(torch.randn(d_sae, d, generator=gen, dtype=torch.float64), dim=1)
    theta = norm * (1 + 0.1 * torch.randn(d_sae, generator=gen, dtype=torch.float64)).clamp_min(0.5)
    b_enc = -norm * (0.5 + torch.rand(d_sae, generator=gen, dtype=torch.float64))
    template = JumpReLUSAE(JumpReLUSAEConfig(d_in=d, d_sae=d_sae, dtype="float64", apply_b_dec_to_input=False))
    a = build_jumprelu(template, W_enc=w_dec.T.clone(), b_enc=b_enc, threshold=theta, W_dec=w_dec,
                       b_dec=torch.zeros(d, dtype=torch.float64))
    g = growth * torch.exp(jitter * torch.randn(d_sae, generator=gen, dtype=torch.float64))
    dec_b = torch.nn.functional.normalize(w_dec + noise * torch.randn(w_dec.shape, generator=gen,
                                                                       dtype=torch.float64) / d ** 0.5, dim=1)
    b = build_jumprelu(template, W_enc=dec_b.T.clone(), b_enc=b_enc * g, threshold=theta * g, W_dec=dec_b,
                       b_dec=torch.zeros(d, dtype=torch.float64))
    order = torch.randperm(d_sae, generator=gen).numpy()
    return a, permute_features(b, order), np.argsort(order)


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
    versions, and ``matches[method]`` (one :class:`Match` per adjacent pair) for every method of
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
    (``solver``/``k`` as in :func:`match`) and, with ``train_acts`` (L, N, d) indexed like
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
    matches use ``solver`` and ``k`` as in :func:`match`."""
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


# --------------------------------------------------------------------------------------------
# Ground-truth experiments, summarised
# --------------------------------------------------------------------------------------------

def copy_recovery(sae: JumpReLUSAE, noises: Sequence[float], scale_spread: float, seed: int = 0,
                  weights: str = "all") -> dict[str, dict[str, float]]:
    """Fraction of a :func:`perturbed_copy`'s permutation that folded and unfolded matching
    recover, for each noise level (keys ``str(noise)``)."""
    out = {}
    for j, noise in enumerate(noises):
        copy_, truth = perturbed_copy(sae, noise=noise, scale_spread=scale_spread, seed=seed + j)
        out[str(noise)] = {name: recovery(match(sae, copy_, fold=f, weights=weights), truth)
                           for name, f in (("folded", True), ("unfolded", False))}
    return out


def synthetic_recovery(gt: SyntheticLayers) -> dict[str, dict[str, float]]:
    """For every adjacent pair of synthetic layers, the fraction of identifiable features
    (both SAEs have a feature for the same true feature) whose match is right, for folded
    and unfolded matching with all weights and folded decoder-only; plus that fraction's
    denominator as ``identifiable`` (the fractions are ``None`` when it is 0)."""
    out = {}
    for t in range(len(gt.saes) - 1):
        truth = gt.true_match(t, t + 1)
        a, b = gt.saes[t], gt.saes[t + 1]
        known = bool((truth >= 0).any())  # without identifiable features there is nothing to score
        out[pair_name(t, t + 1)] = {
            "folded": recovery(match(a, b, fold=True), truth) if known else None,
            "unfolded": recovery(match(a, b, fold=False), truth) if known else None,
            "folded_decoder": recovery(match(a, b, fold=True, weights="decoder"), truth) if known else None,
            "identifiable": float(np.mean(truth >= 0))}
    return out


# --------------------------------------------------------------------------------------------
# Command line: match the SAEs of consecutive layers saved as sae-lens folders
# --------------------------------------------------------------------------------------------

def _pair_names(paths: Sequence[Path]) -> list[str]:
    """A file-safe name per SAE folder: its path relative to the folders' common parent."""
    import os

    resolved = [p.resolve() for p in paths]
    root = Path(os.path.commonpath(resolved)) if len(set(resolved)) > 1 else resolved[0].parent
    return [str(p.relative_to(root)).replace(os.sep, "_") or p.name for p in resolved]


def match_folders(paths: Sequence[str | Path], out: str | Path, *, fold: bool = True, weights: str = "all",
                  solver: str = "exact", k: int = 8, device: str = "cpu",
                  log: Callable[[str], None] = print) -> list[Path]:
    """Match each consecutive pair of sae-lens SAE folders (``SAE.load_from_disk``) and save each
    :class:`Match` (:meth:`Match.save`) as ``out/<A>--<B>.json`` (+ ``.npz``), names from the
    folders' paths below their common parent, metadata holding both paths. A pair whose output
    exists is skipped (resumable), after checking it was made with the same ``fold`` and
    ``weights``. ``log`` gets one line per pair. Returns the JSON paths."""
    from sae_lens import SAE

    import esae.saes  # noqa: F401  registers esae's architectures with sae-lens

    check_choice("weights", weights, WEIGHTS)
    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise ValueError(f"paths must name at least two SAE folders, got {len(paths)}")
    for p in paths:
        if not (p / "cfg.json").is_file():
            raise FileNotFoundError(f"each path must be an sae-lens SAE folder (with cfg.json), got {str(p)!r}")
    names = _pair_names(paths)
    return _match_chain(names, [str(p) for p in paths],
                        lambda i: SAE.load_from_disk(str(paths[i]), device=device), out, fold=fold, weights=weights,
                        solver=solver, k=k, log=log)


def _match_chain(names: Sequence[str], sources: Sequence[str], load: Callable[[int], object], out: str | Path, *,
                 fold: bool, weights: str, solver: str, k: int, log: Callable[[str], None],
                 extra: dict | None = None) -> list[Path]:
    """Match SAE ``i`` (``load(i)``, named ``names[i]``, from ``sources[i]``) with ``i + 1`` for
    every consecutive pair, saving ``out/<name_i>--<name_i+1>.json``; skip pairs already saved."""
    import time

    out = Path(out)
    loaded: dict[int, object] = {}

    def sae(i: int):
        if i not in loaded:
            for j in [j for j in loaded if j < i - 1]:  # keep at most the pair in use
                del loaded[j]
            loaded[i] = load(i)
        return loaded[i]

    written = []
    for i in range(len(names) - 1):
        target = out / f"{names[i]}--{names[i + 1]}.json"
        written.append(target)
        if target.is_file():
            header = Match.read_header(target)
            if header["folded"] != fold or header["weights"] != weights:
                raise ValueError(f"{str(target)!r} exists with fold={header['folded']}, weights={header['weights']!r}; "
                                 f"got fold={fold}, weights={weights!r}: use another --out")
            log(f"{names[i]} -> {names[i + 1]}: exists, skipped ({target})")
            continue
        start = time.perf_counter()
        m = match(sae(i), sae(i + 1), fold=fold, weights=weights, solver=solver, k=k)
        m.save(target, {"method": "sae_match", "a": sources[i], "b": sources[i + 1], "name_a": names[i],
                        "name_b": names[i + 1], "solver": solver, **(extra or {})})
        matched = m.permutation >= 0
        log(f"{names[i]} -> {names[i + 1]}: {m.widths[0]} x {m.widths[1]} features, {int(matched.sum())} matched, "
            f"mean cost {float(m.cost[matched].mean()):.4g}, {time.perf_counter() - start:.1f} s -> {target}")
    return written


def parse_layers(spec: str) -> list[int]:
    """Layer indices from ``"0-25"`` (inclusive range), ``"3,5,9"`` or a mix (``"0-3,7"``)."""
    layers: list[int] = []
    try:
        for part in spec.split(","):
            lo, _, hi = part.strip().partition("-")
            layers += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    except ValueError:
        layers = []
    if len(layers) < 2 or min(layers) < 0:
        raise ValueError(f"layers must name at least two layers >= 0 like '0-25' or '3,5,9', got {spec!r}")
    return layers


def match_release(release: str, layers: Sequence[int], out: str | Path, *, width: str = "16k",
                  sae_id: str = "layer_{layer}/width_{width}/canonical", fold: bool = True, weights: str = "all",
                  solver: str = "exact", k: int = 8, device: str = "cpu",
                  log: Callable[[str], None] = print) -> list[Path]:
    """:func:`match_folders` for SAEs of an sae-lens pretrained ``release`` (e.g.
    ``"gemma-scope-2b-pt-res-canonical"``): SAE ``sae_id.format(layer=t, width=width)`` per
    layer ``t``, loaded with ``sae_lens.SAE.from_pretrained`` (from the Hugging Face cache, or
    downloaded where the machine can reach the hub). Outputs ``out/layer_<t>--layer_<u>.json``."""
    from sae_lens import SAE

    from esae.language_models import hub_access

    check_choice("weights", weights, WEIGHTS)
    if len(layers) < 2:
        raise ValueError(f"layers must hold at least two layers, got {list(layers)}")
    ids = [sae_id.format(layer=t, width=width) for t in layers]

    def load(i: int):
        try:
            with hub_access(release):
                return SAE.from_pretrained(release, ids[i], device=device).eval()
        except Exception as err:  # one line for the user, the cause chained
            raise FileNotFoundError(f"could not load SAE {ids[i]!r} of release {release!r} (not in the Hugging Face "
                                    f"cache and the hub not reachable?): {type(err).__name__}: "
                                    f"{str(err).splitlines()[0] if str(err) else ''}") from err

    return _match_chain([f"layer_{t}" for t in layers], [f"{release}/{i}" for i in ids], load, out, fold=fold,
                        weights=weights, solver=solver, k=k, log=log, extra={"release": release})


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m esae.sae_match A_DIR B_DIR [C_DIR ...] --out DIR`` (:func:`match_folders`) or
    ``python -m esae.sae_match --release R --layers 0-25 [--width 16k] --out DIR``
    (:func:`match_release`). Returns the exit status (2 with a one-line message on bad input)."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m esae.sae_match",
        description="SAE Match (data-free) between the SAEs of consecutive layers, given as local sae-lens SAE "
                    "folders or as an sae-lens pretrained release; one saved Match per pair, resumable.")
    parser.add_argument("saes", nargs="*", metavar="SAE_DIR", help="sae-lens SAE folders, in layer order")
    parser.add_argument("--out", required=True, help="folder for the matches (<A>--<B>.json + .npz per pair)")
    parser.add_argument("--release", help="sae-lens pretrained release instead of SAE_DIRs, e.g. "
                                          "gemma-scope-2b-pt-res-canonical (from the Hugging Face cache or hub)")
    parser.add_argument("--layers", help="with --release: layers, e.g. 0-25 or 3,5,9")
    parser.add_argument("--width", default="16k", help="with --release: the width in the SAE id (default 16k)")
    parser.add_argument("--sae-id", default="layer_{layer}/width_{width}/canonical",
                        help="with --release: SAE id template (default: Gemma Scope canonical)")
    parser.add_argument("--no-fold", action="store_true", help="match unfolded parameters (default: fold thresholds)")
    parser.add_argument("--weights", default="all", choices=WEIGHTS, help="parameters compared (default: all)")
    parser.add_argument("--solver", default="exact", choices=assignment.SOLVERS, help="assignment solver")
    parser.add_argument("--k", type=int, default=8, help="candidates per feature (by cosine) for --solver sparse")
    parser.add_argument("--device", default="cpu", help="torch device the SAEs are loaded on")
    args = parser.parse_args(argv)
    common = dict(fold=not args.no_fold, weights=args.weights, solver=args.solver, k=args.k, device=args.device)
    if args.release is not None:
        if args.saes or args.layers is None:
            parser.error(f"--release takes --layers and no SAE_DIR, got --layers {args.layers!r} and "
                         f"{len(args.saes)} SAE_DIR")
    elif len(args.saes) < 2:
        parser.error(f"SAE_DIR must be given at least twice (a pair to match), got {len(args.saes)}")
    try:
        if args.release is not None:
            match_release(args.release, parse_layers(args.layers), args.out, width=args.width, sae_id=args.sae_id,
                          **common)
        else:
            match_folders(args.saes, args.out, **common)
    except (ValueError, FileNotFoundError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
