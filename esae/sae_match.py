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
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
from scipy.optimize import linear_sum_assignment

from esae.params import check_choice, check_float, check_int

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
    has ``apply_b_dec_to_input=False`` and ``b_enc`` is the true encoder bias. The arithmetic
    runs in float64 and is rounded once to the SAE's dtype.
    """
    sae = _check_jumprelu(sae)
    W_enc, b_enc = sae.W_enc.double(), sae.b_enc.double()
    W_dec, b_dec, theta = sae.W_dec.double(), sae.b_dec.double(), sae.threshold.double()
    if sae.cfg.apply_b_dec_to_input:
        b_enc = b_enc - b_dec @ W_enc
    positive = theta > 0
    dec_norm = W_dec.norm(dim=1)
    target = (theta * dec_norm)[positive].median() if bool(positive.any()) else theta.new_ones(())
    # a feature with a zero decoder row writes nothing; any scale is exact, keep it
    relu_scale = torch.where(dec_norm > 0, dec_norm / target, torch.ones_like(dec_norm))
    scale = torch.where(positive, theta, 1 / relu_scale)
    metadata = copy.deepcopy(sae.cfg.metadata)
    metadata.folded_thresholds = True
    return build_jumprelu(sae, W_enc=W_enc / scale, b_enc=b_enc / scale, threshold=positive.to(theta.dtype),
                          W_dec=W_dec * scale[:, None], b_dec=b_dec, apply_b_dec_to_input=False, metadata=metadata)


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


@dataclass(frozen=True)
class Match:
    """A one-to-one correspondence between the features of two SAEs A and B of width F.

    ``permutation`` (F,) int64: feature ``i`` of A is matched to feature ``permutation[i]`` of B.
    ``cost`` (F,) float64: squared Euclidean distance between the matched parameter vectors
    (folded parameters when ``folded``; for a composed match, the sum of the step costs).
    ``weights``: which parameters were compared (``"decoder"``, ``"encoder"``, ``"all"``).
    """

    permutation: np.ndarray
    cost: np.ndarray
    folded: bool = True
    weights: str = "all"

    def __post_init__(self) -> None:
        perm = _check_permutation(self.permutation)
        cost = np.asarray(self.cost, dtype=np.float64)
        if cost.shape != perm.shape:
            raise ValueError(f"cost must have shape {perm.shape} like the permutation, got {cost.shape}")
        object.__setattr__(self, "permutation", perm)
        object.__setattr__(self, "cost", cost)

    @property
    def size(self) -> int:
        return len(self.permutation)

    def inverse(self) -> Match:
        """The match from B to A."""
        inv = np.argsort(self.permutation)
        return Match(inv, self.cost[inv], self.folded, self.weights)

    def transfer(self, acts: Tensor) -> Tensor:
        """Move feature activations ``(..., F)`` of A into B's feature order: the result's
        column ``permutation[i]`` is ``acts[..., i]``."""
        if acts.shape[-1] != self.size:
            raise ValueError(f"acts must have {self.size} features in the last axis, got {tuple(acts.shape)}")
        inv = torch.as_tensor(np.argsort(self.permutation), device=acts.device)
        return acts[..., inv]

    def agreement(self, other: Match) -> float:
        """Fraction of A's features that ``other`` sends to the same partner."""
        if other.size != self.size:
            raise ValueError(f"matches must have the same size, got {self.size} and {other.size}")
        return float(np.mean(self.permutation == other.permutation))


def compose(match_ab: Match, match_bc: Match) -> Match:
    """The match A → C obtained by following A → B then B → C: ``π_AC = π_BC[π_AB]``. Its
    cost is the sum of the two step costs of each chain (not the direct A–C distance)."""
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


def _check_pair(sae_a: JumpReLUSAE, sae_b: JumpReLUSAE) -> None:
    _check_jumprelu(sae_a, "sae_a"), _check_jumprelu(sae_b, "sae_b")
    if sae_a.cfg.d_in != sae_b.cfg.d_in:
        raise ValueError(f"sae_a and sae_b must read inputs of the same size (d_in), got {sae_a.cfg.d_in} and "
                         f"{sae_b.cfg.d_in}")
    if sae_a.cfg.d_sae != sae_b.cfg.d_sae:
        raise ValueError(f"sae_a and sae_b must have the same number of features (d_sae) to be matched one to one, "
                         f"got {sae_a.cfg.d_sae} and {sae_b.cfg.d_sae}")


def feature_vectors(sae: JumpReLUSAE, weights: str = "all") -> Tensor:
    """One parameter vector per feature, ``(F, D)``: the decoder row (``"decoder"``, D = d),
    the encoder column and bias (``"encoder"``, D = d + 1), or both (``"all"``, D = 2d + 1).
    ``b_dec`` is left out: it does not depend on the order of the features."""
    check_choice("weights", weights, WEIGHTS)
    sae = _check_jumprelu(sae)
    parts = []
    if weights in ("decoder", "all"):
        parts.append(sae.W_dec)
    if weights in ("encoder", "all"):
        b_enc = sae.b_enc - sae.b_dec @ sae.W_enc if sae.cfg.apply_b_dec_to_input else sae.b_enc
        parts += [sae.W_enc.T, b_enc[:, None]]
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


@torch.no_grad()
def match(sae_a: JumpReLUSAE, sae_b: JumpReLUSAE, *, fold: bool = True, weights: str = "all",
          block_size: int = 2048) -> Match:
    """Match the features of ``sae_a`` to those of ``sae_b`` (same ``d_in`` and ``d_sae``).

    With ``fold=True`` (the paper's method) both SAEs are folded first (:func:`fold`). The cost
    of pairing feature ``i`` of A with ``j`` of B is the squared distance between their
    parameter vectors (:func:`feature_vectors`; ``weights`` picks decoder, encoder+bias or all),
    and the permutation minimising the total cost is found exactly by SciPy's
    ``linear_sum_assignment`` on the (F, F) cost matrix, built in blocks (:func:`cost_matrix`).
    Returns a :class:`Match` whose ``cost`` is recomputed per pair in float64.
    """
    check_choice("weights", weights, WEIGHTS)
    _check_pair(sae_a, sae_b)
    if fold:
        sae_a, sae_b = _fold(sae_a), _fold(sae_b)
    va, vb = feature_vectors(sae_a, weights), feature_vectors(sae_b, weights)
    costs = cost_matrix(va, vb, block_size=block_size)
    rows, cols = linear_sum_assignment(costs)
    del costs
    perm = np.empty(len(rows), dtype=np.int64)
    perm[rows] = cols
    exact = (va.double() - vb.double()[torch.as_tensor(perm, device=vb.device)]).pow(2).sum(1)
    return Match(perm, exact.cpu().numpy(), folded=fold, weights=weights)



def match_layers(saes: Sequence[JumpReLUSAE], **kwargs) -> list[Match]:
    """Match every adjacent pair of a stack of SAEs: ``[match(saes[0], saes[1]), ...]``."""
    if len(saes) < 2:
        raise ValueError(f"saes must hold at least two SAEs to match, got {len(saes)}")
    return [match(a, b, **kwargs) for a, b in zip(saes[:-1], saes[1:])]
