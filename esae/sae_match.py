"""SAE Match: data-free matching of SAE features across layers (chapter 7).

Balagansky, Maksimov & Gavrilov (ICLR 2025) match the features of JumpReLU SAEs trained on
consecutive layers of a language model without looking at any data: fold each SAE's
thresholds into its weights, then find the permutation of layer B's features that minimises
the summed squared distance between matched parameter vectors, a linear assignment problem.

Objects follow sae-lens / Gemma Scope: ``W_enc`` (d, F), ``b_enc`` (F,), ``threshold`` θ (F,),
``W_dec`` (F, d), ``b_dec`` (d,); ``f = relu(pre) * (pre > θ)`` with ``pre = x W_enc + b_enc``
and ``x̂ = f W_dec + b_dec``.

This module holds the method (:func:`fold`, :func:`match`, :class:`Match`, :func:`compose`,
:func:`chain`) and its command line. Chapter 7's other parts are modules of their own:
:mod:`esae.jumprelu` trains JumpReLU SAEs with sae-lens in Gemma Scope's units;
:mod:`esae.match_ground_truth` holds the experiments whose answer is known (permuted, rescaled
and perturbed copies; the paper's Figure 2 scenario; SAEs trained on ``sae_lens.synthetic`` data
whose features drift across "layers"); :mod:`esae.match_evaluation` the evaluations that need only
SAEs and activations (weight MSE, cost shares, the data-based reference, hidden-state
approximation, matching score, persistence, partial matching); and everything that needs the
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
from sae_lens import JumpReLUSAE
from scipy.optimize import linear_sum_assignment

from esae import assignment
from esae.checks import check_choice, check_int

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
