"""Sparse autoencoders over base-model activations, built on sae-lens (chapter 5).

The four SAEs of the paper, all over the 256-d middle-layer activations ψ of a base autoencoder:

- ``regular``: a TopK SAE with linear encoder and decoder, ``expansion`` (8) × d_in = 2,048 latents;
- ``wide``: the same with |G| = 4 times the latents (8,192), room for one latent per orientation;
- ``two_layer``: encoder Linear(256, 512) → ReLU → Linear(512, 2,048), linear decoder;
- ``invariant``: the two-layer SAE trained with the invariance loss
  ``L_inv = E_{x,p} ‖ψ(x) − D(E(ψ(g^p x)))‖²`` (input: the activation of a rotated image; target:
  the activation of the canonical, generated image);
- ``equivariant``: the invariant SAE plus the matrix M of chapter 4; the reconstruction of
  ψ(g^p x) is ``M^p D(E(ψ(g^p x)))``.

Regular, wide and two-layer SAEs are trained on rotation-augmented activations (each sample
drawn with a uniformly random rotation p ∈ {0, 1, 2, 3} every epoch); the invariant SAE sees the
same inputs, but its target is always the canonical activation.

**sae-lens throughout.** Regular and wide SAEs are sae-lens's own ``TopKSAE`` (architecture
``"topk"``) and reload with plain sae-lens. The two-layer encoder is the architecture
``"two_layer_topk"`` and the equivariant SAE ``"equivariant_topk"`` (weights + M in one
``sae_weights.safetensors``), both registered with sae-lens's registry on import, so
``sae_lens.SAE.load_from_disk(path)`` rebuilds them. Training runs sae-lens's ``SAETrainer``
(Adam, gradient clipping, dead-latent tracking, the AuxK loss for dead latents) through its public
``step`` seam. Two things are ours:

1. *Pairs.* The trainer only ever looks at a batch's first axis, so a batch of
   (input, target) pairs stacked on axis 1, ``(B, 2, d)``, passes through it unchanged; the one
   place that computes the loss, the SAE's ``training_forward_pass``, reads the target from it.
   That is the whole extension the invariance loss needs.
2. *Speed.* ``training_forward_pass`` is replaced by a sparse one computing the same loss and the
   same gradients as sae-lens's dense TopK (tested): only K latents per sample are non-zero, so
   the decoder runs as an ``embedding_bag`` over the K active rows, and the encoder's backward
   touches only the K selected columns (see :class:`_TopKGather`, :class:`_SparseDecode`). Per
   sample that is one dense matmul (the encoder's forward, needed to pick the top K) instead of
   about four, and no ``(B, F)`` temporaries beyond the pre-activations.

Metrics for the frontier (:func:`evaluate`): L0, L1 of the latents (decoder rows have unit norm
after training, so L1 is comparable across SAEs), the fraction of dead latents, explained variance
and the spliced MSE through any ``decode`` callable. Feature classification: :func:`feature_scores`
(cosine of d and M d) and :func:`invariant_fraction`; :func:`feature_images` draws features through
a decoder.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

# sae-lens imports tqdm.auto, which warns in notebooks without ipywidgets; our bars handle that
warnings.filterwarnings("ignore", message="IProgress not found")
from sae_lens import SAE, registry  # noqa: E402
from sae_lens.config import SAETrainerConfig  # noqa: E402
from sae_lens.saes.sae import TrainStepInput, TrainStepOutput  # noqa: E402
from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig, TopKTrainingSAE, TopKTrainingSAEConfig  # noqa: E402
from sae_lens.training.sae_trainer import SAETrainer  # noqa: E402
from torch import nn  # noqa: E402

from esae.checks import check_choice, check_float, check_int  # noqa: E402
from esae.runtime import progress  # noqa: E402

Tensor = torch.Tensor

SAE_NAMES = ("regular", "wide", "two_layer", "invariant", "equivariant")
TRAINED_NAMES = ("regular", "wide", "two_layer", "invariant")  # the equivariant SAE is invariant + M
BASE_MODELS = ("mlp", "cnn")
CANONICAL_CHOICES = ("label_code", "generated")
TWO_LAYER_ARCH = "two_layer_topk"
EQUIVARIANT_ARCH = "equivariant_topk"


# ---------------------------------------------------------------------------------------------
# Sparse kernels: the TopK SAE's forward and backward touching only the K active latents
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _LatentGroups:
    """The (sample, slot) pairs of an index tensor ``idx`` ``(B, J)`` grouped by latent: pair
    ``order[i]`` (flat index ``b * J + j``) belongs to sample ``rows[i]``; latent f's pairs are
    ``order[offsets[f] : offsets[f] + counts[f]]``."""

    order: Tensor
    rows: Tensor
    offsets: Tensor


def _latent_groups(idx: Tensor, n_latents: int) -> _LatentGroups:
    flat = idx.flatten()
    order = torch.argsort(flat)
    counts = torch.bincount(flat, minlength=n_latents)
    return _LatentGroups(order, torch.div(order, idx.shape[1], rounding_mode="floor"), torch.cumsum(counts, 0) - counts)


def _segment_rows(source: Tensor, groups: _LatentGroups, weights: Tensor) -> Tensor:
    """``out[f] = Σ_{(b, j): idx[b, j] = f} weights[b, j] · source[b]``: ``(n_latents, m)`` from
    ``source`` ``(B, m)`` — a sparse ``Sᵀ @ source`` done as one ``embedding_bag`` over the pairs
    sorted by latent, without forming the ``(B, n_latents)`` matrix S."""
    return F.embedding_bag(groups.rows, source, groups.offsets, mode="sum",
                           per_sample_weights=weights.flatten()[groups.order].to(source.dtype))


class _TopKGather(torch.autograd.Function):
    """``(h @ W + b)[b, idx[b, j]]`` ``(B, J)``, read off ``scores = (h @ W + b) · norms`` ``(B, F)``
    already computed without grad (``norms`` ``(F,)``, or None for 1). The backward pass is
    sparse: the gradient reaches only the J selected columns of ``W`` ``(m, F)`` and entries of
    ``b`` ``(F,)``, and ``h`` ``(B, m)`` gets ``Σ_j g[b, j] W[:, idx[b, j]]`` via ``embedding_bag``."""

    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor, bias: Tensor, scores: Tensor, norms: Tensor | None, idx: Tensor,
                groups: _LatentGroups) -> Tensor:
        ctx.save_for_backward(h, weight, idx)
        ctx.groups = groups
        picked = scores.gather(1, idx)
        return picked / norms[idx] if norms is not None else picked

    @staticmethod
    def backward(ctx, grad: Tensor):
        h, weight, idx = ctx.saved_tensors
        grad_h = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_h = F.embedding_bag(idx, weight.t().contiguous(), mode="sum", per_sample_weights=grad)
        if ctx.needs_input_grad[1]:
            grad_w = _segment_rows(h, ctx.groups, grad).t().contiguous()
        if ctx.needs_input_grad[2]:
            grad_b = torch.zeros(weight.shape[1], dtype=grad.dtype, device=grad.device)
            grad_b.index_add_(0, idx.flatten(), grad.flatten())
        return grad_h, grad_w, grad_b, None, None, None, None


_SDDMM_DEVICES = ("cpu",)  # where torch.sparse.sampled_addmm computes the value gradient (else: dense + gather)


def _sampled_rows_dot(grad: Tensor, w_dec: Tensor, idx: Tensor) -> Tensor:
    """``out[b, j] = ⟨grad[b], w_dec[idx[b, j]]⟩`` ``(B, J)``: the product ``grad @ w_decᵀ`` sampled
    at the J active latents of each row. On the CPU one ``sampled_addmm`` (SDDMM) over the CSR
    pattern of ``idx`` does it in O(B·J·d); elsewhere the dense product is gathered (a GPU does the
    ``(B, F)`` matmul faster than it would launch a sparse kernel)."""
    if grad.device.type in _SDDMM_DEVICES:
        rows, width = idx.shape
        crow = torch.arange(0, rows * width + 1, width, device=idx.device)
        pattern = torch.sparse_csr_tensor(crow, idx.flatten(), torch.zeros(rows * width, dtype=grad.dtype,
                                          device=grad.device), (rows, w_dec.shape[0]), check_invariants=False)
        return torch.sparse.sampled_addmm(pattern, grad, w_dec.t(), beta=0.0).values().view(rows, width)
    return (grad @ w_dec.t()).gather(1, idx)


class _SparseDecode(torch.autograd.Function):
    """``Σ_j vals[b, j] W_dec[idx[b, j]]`` ``(B, d)`` for ``vals``, ``idx`` ``(B, J)`` and
    ``W_dec`` ``(F, d)``; forward and backward cost O(B·J·d) instead of O(B·F·d)."""

    @staticmethod
    def forward(ctx, vals: Tensor, idx: Tensor, w_dec: Tensor, groups: _LatentGroups) -> Tensor:
        ctx.save_for_backward(vals, idx, w_dec)
        ctx.groups = groups
        return F.embedding_bag(idx, w_dec, mode="sum", per_sample_weights=vals)

    @staticmethod
    def backward(ctx, grad: Tensor):
        vals, idx, w_dec = ctx.saved_tensors
        grad_vals = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_vals = _sampled_rows_dot(grad.contiguous(), w_dec, idx)
        if ctx.needs_input_grad[2]:
            grad_w = _segment_rows(grad, ctx.groups, vals)
        return grad_vals, None, grad_w, None


def sparse_decode(vals: Tensor, idx: Tensor, w_dec: Tensor) -> Tensor:
    """Decode TopK latents given as values and indices ``(B, K)`` with dictionary ``w_dec``
    ``(F, d)``: ``(B, d)``, differentiable in ``vals`` and ``w_dec`` at O(B·K·d) cost."""
    return _SparseDecode.apply(vals, idx, w_dec, _latent_groups(idx, w_dec.shape[0]))


# ---------------------------------------------------------------------------------------------
# Architectures (sae-lens classes and configs)
# ---------------------------------------------------------------------------------------------

def _check_topk_shape(d_in: int, d_sae: int, k: int) -> None:
    check_int("d_in", d_in, 1)
    check_int("d_sae", d_sae, 1)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= d_sae:
        raise ValueError(f"k must be in 1..{d_sae}, got {k!r}")


@dataclass
class TwoLayerTopKSAEConfig(TopKSAEConfig):
    """sae-lens config of the two-layer-encoder TopK SAE: ``d_hidden`` is the width of the
    encoder's ReLU hidden layer (512 in the paper)."""

    d_hidden: int = 512

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_topk_shape(self.d_in, self.d_sae, self.k)
        check_int("d_hidden", self.d_hidden, 1)

    @classmethod
    def architecture(cls) -> str:
        return TWO_LAYER_ARCH


def _init_two_layer(sae: SAE, d_hidden: int) -> None:
    """Encoder ``Linear(d_in, d_hidden) → ReLU → Linear(d_hidden, d_sae)`` with PyTorch's
    default ``nn.Linear`` initialisation; ``W_enc`` becomes the second layer ``(d_hidden, d_sae)``."""
    first, second = nn.Linear(sae.cfg.d_in, d_hidden), nn.Linear(d_hidden, sae.cfg.d_sae)
    kw = dict(dtype=sae.dtype, device=sae.device)
    sae.W_enc1 = nn.Parameter(first.weight.detach().t().contiguous().to(**kw))
    sae.b_enc1 = nn.Parameter(first.bias.detach().to(**kw))
    sae.W_enc = nn.Parameter(second.weight.detach().t().contiguous().to(**kw))
    sae.b_enc = nn.Parameter(second.bias.detach().to(**kw))


def _hidden(sae: SAE, x: Tensor) -> Tensor:
    """The two-layer encoder's hidden layer ``relu((x − b_dec) W_enc1 + b_enc1)`` ``(n, d_hidden)``."""
    return torch.relu(sae.process_sae_in(x) @ sae.W_enc1 + sae.b_enc1)


class TwoLayerTopKSAE(TopKSAE):
    """TopK SAE whose encoder is a two-layer MLP (inference class, architecture
    ``"two_layer_topk"``): ``encode(x (n, d_in)) -> (n, d_sae)`` with at most K non-zero
    latents per row, ``decode(z (n, d_sae)) -> (n, d_in)`` linear with dictionary ``W_dec``."""

    cfg: TwoLayerTopKSAEConfig

    def initialize_weights(self) -> None:
        super().initialize_weights()
        _init_two_layer(self, self.cfg.d_hidden)

    def encode(self, x: Tensor) -> Tensor:
        hidden_pre = self.hook_sae_acts_pre(_hidden(self, x) @ self.W_enc + self.b_enc)
        if self.cfg.rescale_acts_by_decoder_norm:
            hidden_pre = hidden_pre * self.W_dec.norm(dim=-1)
        return self.hook_sae_acts_post(self.activation_fn(hidden_pre))


@dataclass
class EquivariantTopKSAEConfig(TwoLayerTopKSAEConfig):
    """sae-lens config of the equivariant SAE: a two-layer TopK SAE plus a ``(d_in, d_in)``
    matrix M representing the generator of a cyclic group of order ``group_order``."""

    group_order: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("group_order", self.group_order, 1)

    @classmethod
    def architecture(cls) -> str:
        return EQUIVARIANT_ARCH


class EquivariantTopKSAE(TwoLayerTopKSAE):
    """The adaptively equivariant SAE (architecture ``"equivariant_topk"``): an invariant
    two-layer TopK SAE and the matrix ``m`` ``(d_in, d_in)``, saved together in one
    ``sae_weights.safetensors``.

    ``encode``/``decode`` are the invariant SAE's (``decode(encode(ψ(g^p x))) ≈ ψ(x)``, the
    canonical activation); :meth:`reconstruct` ``(x, p)`` applies ``M^p`` to map the canonical
    reconstruction back to the orientation of the input. Activations are row vectors, so
    ``M^p y`` is computed as ``y @ (M^p)ᵀ`` (the convention of :mod:`esae.equivariance`).
    """

    cfg: EquivariantTopKSAEConfig
    m: Tensor

    def initialize_weights(self) -> None:
        super().initialize_weights()
        self.register_buffer("m", torch.eye(self.cfg.d_in, dtype=self.dtype, device=self.device))

    def m_power(self, p: int) -> Tensor:
        """``M^p`` ``(d_in, d_in)`` for ``p`` taken modulo ``group_order``."""
        return torch.linalg.matrix_power(self.m, int(p) % self.cfg.group_order)

    def transform(self, acts: Tensor, p: int | Tensor) -> Tensor:
        """``M^p`` applied to activations ``(n, d_in)``; ``p`` an int or an ``(n,)`` tensor of
        per-row powers (one matmul per group element present, never a per-row loop)."""
        if not torch.is_tensor(p):
            return acts @ self.m_power(p).t()
        p = p.to(acts.device).long().remainder(self.cfg.group_order)
        if p.shape != acts.shape[:1]:
            raise ValueError(f"p must be an int or a tensor of shape ({acts.shape[0]},), got {tuple(p.shape)}")
        out = torch.empty_like(acts)
        for q in p.unique().tolist():
            rows = p == q
            out[rows] = acts[rows] @ self.m_power(q).t()
        return out

    def reconstruct(self, x: Tensor, p: int | Tensor) -> Tensor:
        """Equivariant reconstruction of ``x = ψ(g^p x₀)`` ``(n, d_in)``: ``M^p D(E(x))``."""
        return self.transform(self.decode(self.encode(x)), p)

    def dictionary(self, p: int = 1) -> Tensor:
        """The transformed dictionary ``D ↦ M^p D``: row j is ``M^p d_j``, ``(d_sae, d_in)``."""
        return self.W_dec @ self.m_power(p).t()

    @classmethod
    def from_invariant(cls, sae: TwoLayerTopKSAE, m: Tensor, group_order: int = 4) -> EquivariantTopKSAE:
        """Attach ``m`` ``(d_in, d_in)`` to a trained invariant two-layer SAE (weights copied)."""
        if not isinstance(sae, TwoLayerTopKSAE):
            raise ValueError(f"sae must be a TwoLayerTopKSAE (the invariant SAE), got {type(sae).__name__}")
        d = sae.cfg.d_in
        if tuple(m.shape) != (d, d):
            raise ValueError(f"m must have shape ({d}, {d}), got {tuple(m.shape)}")
        cfg_dict = {**sae.cfg.to_dict(), "architecture": EQUIVARIANT_ARCH, "group_order": group_order}
        out = cls(EquivariantTopKSAEConfig.from_dict(cfg_dict))
        state = {**sae.state_dict(), "m": m.detach().to(dtype=sae.dtype, device=sae.device)}
        out.load_state_dict(state)
        return out.to(sae.device)


class _SparseTopKTraining:
    """Mixin for sae-lens ``TopKTrainingSAE`` subclasses: a sparse ``training_forward_pass``
    with the same loss and gradients as sae-lens's dense one, accepting (input, target) pairs.

    ``step_input.sae_in`` is either ``(B, d_in)`` (target = input, the usual SAE loss) or
    ``(B, 2, d_in)`` holding ``[input, target]`` pairs (the invariance loss)."""

    cfg: TopKTrainingSAEConfig

    def _encoder_hidden(self, x: Tensor) -> Tensor:
        """The input to the last (TopK) encoder layer, ``(B, m)``."""
        return self.process_sae_in(x)

    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        sae_in = step_input.sae_in
        if sae_in.ndim == 3 and sae_in.shape[1] == 2:
            x, target = sae_in[:, 0], sae_in[:, 1].to(self.dtype)
        elif sae_in.ndim == 2:
            x = target = sae_in.to(self.dtype)
        else:
            raise ValueError(f"sae_in must be (B, d_in) or (B, 2, d_in) pairs, got {tuple(sae_in.shape)}")
        n_latents, k = self.cfg.d_sae, self.cfg.k
        h = self._encoder_hidden(x)
        with torch.no_grad():
            # selection scores (B, F), the one dense matmul: pre-activations times decoder norms,
            # folded into the weights (an (m, F) product instead of a second (B, F) pass)
            norms = self.W_dec.norm(dim=-1) if self.cfg.rescale_acts_by_decoder_norm else None
            if norms is not None:
                scores = torch.addmm(self.b_enc * norms, h, self.W_enc * norms)
            else:
                scores = torch.addmm(self.b_enc, h, self.W_enc)
            idx = scores.topk(k, dim=-1, sorted=False).indices  # (B, K)
            dead = step_input.dead_neuron_mask
            n_dead = int(dead.sum()) if dead is not None else 0
            k_aux = min(self.cfg.d_in // 2, n_dead)
            if k_aux > 0:  # AuxK (Gao et al.): the top dead latents model the residual
                dead_idx = dead.nonzero().squeeze(1)
                aux_idx = dead_idx[scores[:, dead_idx].topk(k_aux, dim=-1, sorted=False).indices]
                idx_all = torch.cat([idx, aux_idx], 1)
            else:
                idx_all = idx
            groups_all = _latent_groups(idx_all, n_latents)
            groups = groups_all if k_aux == 0 else _latent_groups(idx, n_latents)
        raw = _TopKGather.apply(h, self.W_enc, self.b_enc, scores, norms, idx_all, groups_all)
        vals = raw[:, :k].relu()
        sae_out = _SparseDecode.apply(vals, idx, self.W_dec, groups) + self.b_dec
        mse_loss = (sae_out - target).pow(2).sum(-1).mean()
        losses = {"mse_loss": mse_loss}
        total = mse_loss
        if k_aux > 0:
            aux_vals = raw[:, k:]
            residual = (target - sae_out).detach()
            aux_out = _SparseDecode.apply(aux_vals, aux_idx, self.W_dec, _latent_groups(aux_idx, n_latents))
            scale = min(n_dead / (self.cfg.d_in // 2), 1.0)
            aux = self.cfg.aux_loss_coefficient * scale * (aux_out - residual).pow(2).sum(-1).mean()
            losses["auxiliary_reconstruction_loss"] = aux
            total = total + aux
        with torch.no_grad():  # latents in units of unit-norm dictionary rows, for the trainer's statistics
            shown = vals * norms[idx] if norms is not None else vals
            rows = torch.arange(x.shape[0], device=x.device).repeat_interleave(k)
            feature_acts = torch.sparse_coo_tensor(torch.stack([rows, idx.flatten()]), shown.flatten(),
                                                   (x.shape[0], n_latents), check_invariants=False)
        return TrainStepOutput(sae_in=target, sae_out=sae_out, feature_acts=feature_acts, hidden_pre=scores,
                               loss=total, losses=losses)


class FastTopKTrainingSAE(_SparseTopKTraining, TopKTrainingSAE):
    """sae-lens's ``TopKTrainingSAE`` (linear encoder, architecture ``"topk"``) with the sparse
    training pass; it saves as a plain sae-lens ``TopKSAE``."""


@dataclass
class TwoLayerTopKTrainingSAEConfig(TopKTrainingSAEConfig):
    """Training config of the two-layer-encoder TopK SAE (``d_hidden``: hidden width)."""

    d_hidden: int = 512

    def __post_init__(self) -> None:
        _check_topk_shape(self.d_in, self.d_sae, self.k)
        check_int("d_hidden", self.d_hidden, 1)
        super().__post_init__()

    @classmethod
    def architecture(cls) -> str:
        return TWO_LAYER_ARCH


class TwoLayerTopKTrainingSAE(_SparseTopKTraining, TopKTrainingSAE):
    """Training class of the two-layer-encoder TopK SAE (sae-lens ``TrainingSAE``)."""

    cfg: TwoLayerTopKTrainingSAEConfig

    def initialize_weights(self) -> None:
        super().initialize_weights()
        _init_two_layer(self, self.cfg.d_hidden)

    def _encoder_hidden(self, x: Tensor) -> Tensor:
        return _hidden(self, x)

    def encode_with_hidden_pre(self, x: Tensor) -> tuple[Tensor, Tensor]:
        hidden_pre = self.hook_sae_acts_pre(_hidden(self, x) @ self.W_enc + self.b_enc)
        if self.cfg.rescale_acts_by_decoder_norm:
            hidden_pre = hidden_pre * self.W_dec.norm(dim=-1)
        return self.hook_sae_acts_post(self.activation_fn(hidden_pre)), hidden_pre


def _register(architecture: str, cls: type, cfg_cls: type, training: bool) -> None:
    """Register with sae-lens, idempotently: a class of the same module and name (this module,
    imported or reloaded again) replaces the stale entry; a foreign class is an error."""
    table = registry.SAE_TRAINING_CLASS_REGISTRY if training else registry.SAE_CLASS_REGISTRY
    existing = table.get(architecture)
    if existing is not None:
        old = existing[0]
        if old is cls:
            return
        if (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"sae-lens architecture {architecture!r} is already registered by "
                             f"{old.__module__}.{old.__qualname__}")
        del table[architecture]
    (registry.register_sae_training_class if training else registry.register_sae_class)(architecture, cls, cfg_cls)


def ensure_registered() -> None:
    """Make sure sae-lens knows this module's architectures (done on import; cheap to repeat)."""
    _register(TWO_LAYER_ARCH, TwoLayerTopKSAE, TwoLayerTopKSAEConfig, training=False)
    _register(TWO_LAYER_ARCH, TwoLayerTopKTrainingSAE, TwoLayerTopKTrainingSAEConfig, training=True)
    _register(EQUIVARIANT_ARCH, EquivariantTopKSAE, EquivariantTopKSAEConfig, training=False)


ensure_registered()


def load_sae(path: str | Path, device: torch.device | str = "cpu") -> SAE:
    """``sae_lens.SAE.load_from_disk`` after making sure our architectures are registered."""
    ensure_registered()
    return SAE.load_from_disk(str(path), device=str(device)).eval()


# ---------------------------------------------------------------------------------------------
# Training configuration and training
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SAETrainConfig:
    """How one SAE is built and trained.

    ``name``: regular | wide | two_layer | invariant. Latents: ``d_in · expansion``, times
    ``group_order`` for the wide SAE. ``d_hidden``: the two-layer encoder's hidden width.
    ``n_epochs`` passes over the training images, each image with a fresh random rotation;
    ``batch_size`` samples per Adam step at learning rate ``lr`` (constant, then a linear decay to
    zero over the last ``lr_decay_fraction`` of the steps; the paper: 0). ``aux_coefficient``
    weighs sae-lens's AuxK loss for latents that have not fired in the last ``dead_window``
    samples. ``canonical`` picks the invariant SAE's target in each orbit: ``generated`` (the
    generated image: under the ``upright`` layout the paper's canonical image, known by
    construction; under ``independent`` the image as drawn, not identifiable from its rotations)
    or ``label_code`` (the orbit member with the smallest label code, see
    :func:`canonical_rotation`; needed only under ``independent``). Bump ``version`` when the
    training code changes (it keys the cache)."""

    name: str
    k: int
    d_in: int = 256
    expansion: int = 8
    group_order: int = 4
    d_hidden: int = 512
    n_epochs: int = 500
    batch_size: int = 64
    lr: float = 1e-3
    lr_decay_fraction: float = 0.0
    aux_coefficient: float = 1.0
    dead_window: int = 10_000
    canonical: str = "generated"
    seed: int = 0
    version: int = 1

    def __post_init__(self) -> None:
        check_choice("name", self.name, TRAINED_NAMES)
        check_choice("canonical", self.canonical, CANONICAL_CHOICES)
        check_int("d_in", self.d_in, 1)
        check_int("expansion", self.expansion, 1, 1024)
        check_int("group_order", self.group_order, 1)
        check_int("d_hidden", self.d_hidden, 1)
        if isinstance(self.k, bool) or not isinstance(self.k, int) or not 1 <= self.k <= self.d_sae:
            raise ValueError(f"k must be in 1..{self.d_sae}, got {self.k!r}")
        check_int("n_epochs", self.n_epochs, 1)
        check_int("batch_size", self.batch_size, 1)
        check_float("lr", self.lr, 0.0, 1.0, lo_open=True)
        check_float("lr_decay_fraction", self.lr_decay_fraction, 0.0, 1.0)
        check_float("aux_coefficient", self.aux_coefficient, 0.0)
        check_int("dead_window", self.dead_window, 1)
        check_int("seed", self.seed, 0)

    @property
    def d_sae(self) -> int:
        """Number of latents."""
        return self.d_in * self.expansion * (self.group_order if self.name == "wide" else 1)

    @property
    def two_layer(self) -> bool:
        return self.name in ("two_layer", "invariant")

    @property
    def invariant(self) -> bool:
        return self.name == "invariant"


def build_training_sae(config: SAETrainConfig, device: torch.device | str = "cpu") -> TopKTrainingSAE:
    """The untrained sae-lens training SAE for ``config``, initialised from ``config.seed``
    (without touching the global random state)."""
    common = dict(d_in=config.d_in, d_sae=config.d_sae, k=config.k, device=str(device),
                  aux_loss_coefficient=config.aux_coefficient)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        if config.two_layer:
            return TwoLayerTopKTrainingSAE(TwoLayerTopKTrainingSAEConfig(d_hidden=config.d_hidden, **common))
        return FastTopKTrainingSAE(TopKTrainingSAEConfig(**common))


def orbit_batches(acts: Tensor, batch_size: int, *, pairs: bool, generator: torch.Generator) -> Iterator[Tensor]:
    """Endless shuffled batches from orbit activations ``acts`` ``(n, G, d)`` with
    ``acts[i, p] = ψ(g^p x_i)`` (``p = 0`` the canonical image). Each epoch visits every image
    once with a uniformly random rotation p; yields ``(B, d)`` inputs ``ψ(g^p x)``, or with
    ``pairs`` ``(B, 2, d)`` pairs ``[ψ(g^p x), ψ(x)]`` — the invariance loss's input and
    canonical target. Incomplete last batches are dropped (sae-lens's trainer assumes full ones)."""
    n, order = acts.shape[:2]
    if n < batch_size:
        raise ValueError(f"batch_size must be at most the number of training images ({n}), got {batch_size}")
    while True:
        perm = torch.randperm(n, generator=generator).to(acts.device)
        powers = torch.randint(order, (n,), generator=generator).to(acts.device)
        for start in range(0, n - batch_size + 1, batch_size):
            i, p = perm[start:start + batch_size], powers[start:start + batch_size]
            yield torch.stack([acts[i, p], acts[i, 0]], 1) if pairs else acts[i, p]


@dataclass
class TrainResult:
    """A trained SAE (inference class, eval mode) and its training ``history``: ``steps``,
    ``samples``, ``seconds``, ``samples_per_s`` and the per-step ``mse`` curve."""

    sae: SAE
    history: dict[str, Any] = field(default_factory=dict)


def train_sae(config: SAETrainConfig, acts: Tensor, device: torch.device | str = "cpu",
              desc: str | None = None) -> TrainResult:
    """Train the SAE ``config`` describes on orbit activations ``acts`` ``(n, G, d_in)``
    (``acts[i, p] = ψ(g^p x_i)``) with sae-lens's ``SAETrainer``.

    The decoder bias starts at the mean target activation (the usual SAE initialisation; the
    encoder then sees centred inputs). The returned SAE is the inference version sae-lens
    saves: decoder rows folded to unit norm, so latent magnitudes are comparable across SAEs."""
    device = torch.device(device)
    if acts.ndim != 3 or acts.shape[2] != config.d_in:
        raise ValueError(f"acts must be (n, G, {config.d_in}) orbit activations, got {tuple(acts.shape)}")
    acts = acts.to(device=device, dtype=torch.float32)
    sae = build_training_sae(config, device)
    with torch.no_grad():
        sae.b_dec.copy_(acts[:, 0].mean(0) if config.invariant else acts.mean((0, 1)))
    steps_per_epoch = acts.shape[0] // config.batch_size if acts.shape[0] >= config.batch_size else 0
    n_steps = config.n_epochs * steps_per_epoch
    if n_steps == 0:
        raise ValueError(f"batch_size must be at most the number of training images ({acts.shape[0]}), "
                         f"got {config.batch_size}")
    trainer_cfg = SAETrainerConfig(
        total_training_samples=n_steps * config.batch_size, train_batch_size_samples=config.batch_size,
        lr=config.lr, lr_end=config.lr, lr_decay_steps=int(config.lr_decay_fraction * n_steps),
        device=str(device), dead_feature_window=max(1, math.ceil(config.dead_window / config.batch_size)),
        feature_sampling_window=max(1, steps_per_epoch))
    generator = torch.Generator().manual_seed(config.seed)
    batches = orbit_batches(acts, config.batch_size, pairs=config.invariant, generator=generator)
    trainer = SAETrainer(trainer_cfg, sae, data_provider=batches)
    mse = torch.empty(n_steps, device=device)
    start = time.perf_counter()
    for step in progress(range(n_steps), desc=desc or f"{config.name} k={config.k}", leave=False):
        trainer.maybe_reset_sparsity()
        out = trainer.step(next(batches))  # sae-lens's public single-step seam (what fit() calls)
        trainer.n_training_steps += 1
        mse[step] = out.losses["mse_loss"].detach()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    trainer.set_final_sae_metadata()
    sae.cfg.metadata.esae_training = {"name": config.name, "objective": "invariant" if config.invariant else "reconstruction"}
    history = {"steps": n_steps, "samples": n_steps * config.batch_size, "seconds": seconds,
               "samples_per_s": n_steps * config.batch_size / max(seconds, 1e-9), "mse": mse.cpu().tolist()}
    return TrainResult(_to_inference(sae), history)


def _to_inference(sae: TopKTrainingSAE) -> SAE:
    """The inference SAE sae-lens would save for ``sae`` (decoder norms folded)."""
    ensure_registered()
    state = sae.state_dict()
    sae.process_state_dict_for_saving_inference(state)
    cfg_dict = sae.cfg.get_inference_sae_cfg_dict()
    out = SAE.from_dict(cfg_dict)
    out.load_state_dict(state)
    return out.to(sae.device).eval()


# ---------------------------------------------------------------------------------------------
# Using a trained SAE: reconstructions and the frontier metrics
# ---------------------------------------------------------------------------------------------

def reconstruct(sae: SAE, acts: Tensor, p: int | Tensor | None = None) -> Tensor:
    """The SAE's reconstruction of ``acts`` ``(n, d_in)``: ``M^p D(E(x))`` for an equivariant
    SAE (``p`` required: the rotation of each input relative to its canonical image), ``D(E(x))``
    for every other SAE (an invariant SAE thus reconstructs the canonical activation)."""
    if isinstance(sae, EquivariantTopKSAE):
        if p is None:
            raise ValueError("p (the rotation of each input) is required to reconstruct with an equivariant SAE")
        return sae.reconstruct(acts, p)
    return sae.decode(sae.encode(acts))


@torch.no_grad()
def evaluate(sae: SAE, acts: Tensor, p: Tensor | int | None = None, *,
             decode: Callable[[Tensor], Tensor] | None = None, images: Tensor | None = None,
             batch_size: int = 4096) -> dict[str, float | None]:
    """Frontier metrics of ``sae`` on activations ``acts`` ``(n, d_in)`` of images ``g^p x``.

    Returns ``l0`` (mean number of non-zero latents), ``l1`` (mean L1 norm of the latents; the
    decoder rows have unit norm), ``dead`` (fraction of latents that never fire on ``acts``),
    ``explained_variance`` (1 − Σ‖x − x̂‖² / Σ‖x − x̄‖², pooled) and ``spliced_mse``: the mean
    squared pixel error of ``decode(x̂)`` against ``images`` ``(n, 1, H, W)`` — the base model's
    reconstruction error with its activations replaced by the SAE's (None without ``decode``)."""
    device = sae.W_dec.device
    n = acts.shape[0]
    p_all = torch.as_tensor(p).expand(n) if p is not None else None
    l0 = l1 = resid = spliced = 0.0
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool, device=device)
    mean = acts.double().mean(0).to(device)
    total = 0.0
    for start in range(0, n, batch_size):
        x = acts[start:start + batch_size].to(device)
        z = sae.encode(x)
        xhat = sae.decode(z)
        if isinstance(sae, EquivariantTopKSAE):
            if p_all is None:
                raise ValueError("p is required to evaluate an equivariant SAE")
            xhat = sae.transform(xhat, p_all[start:start + batch_size])
        nz = z != 0
        l0 += float(nz.sum())
        l1 += float(z.abs().sum())
        fired |= nz.any(0)
        resid += float((x - xhat).double().pow(2).sum())
        total += float((x.double() - mean).pow(2).sum())
        if decode is not None:
            if images is None:
                raise ValueError("images are required with decode (the spliced MSE compares against them)")
            target = images[start:start + batch_size].to(device)
            spliced += float((decode(xhat) - target).double().pow(2).sum()) / target[0].numel()
    return {"l0": l0 / n, "l1": l1 / n, "dead": float((~fired).float().mean()),
            "explained_variance": 1.0 - resid / total if total > 0 else None,
            "spliced_mse": spliced / n if decode is not None else None}


@torch.no_grad()
def spliced_mse(decode: Callable[[Tensor], Tensor], acts: Tensor, images: Tensor, batch_size: int = 4096) -> float:
    """Mean squared pixel error of ``decode(acts)`` ``(n, d)`` against ``images`` ``(n, 1, H, W)``:
    with the base model's own activations, its reconstruction error (the floor of the frontier)."""
    err = sum(float((decode(acts[i:i + batch_size]) - images[i:i + batch_size].to(acts.device)).double().pow(2).sum())
              for i in range(0, acts.shape[0], batch_size))
    return err / images.numel()


@torch.no_grad()
def orbit_spread(sae: SAE, acts: Tensor, batch_size: int = 4096) -> float:
    """How much the latents change across an orbit, for orbit activations ``acts`` ``(n, G, d)``:
    ``Σ_i Σ_p ‖z_ip − z̄_i‖² / Σ_i Σ_p ‖z_ip‖²`` with ``z_ip = E(ψ(g^p x_i))`` and ``z̄_i`` the
    orbit mean — 0 for an encoder that is exactly invariant, larger the more the code depends
    on the orientation (the relative invariance error of :func:`esae.groups.invariance_error`
    measured around the orbit mean)."""
    n, order, d = acts.shape
    num = den = 0.0
    for start in range(0, n, max(1, batch_size // order)):
        chunk = acts[start:start + max(1, batch_size // order)].to(sae.W_dec.device)
        z = sae.encode(chunk.reshape(-1, d)).view(chunk.shape[0], order, -1)
        num += float((z - z.mean(1, keepdim=True)).pow(2).sum())
        den += float(z.pow(2).sum())
    return num / den if den > 0 else 0.0


@torch.no_grad()
def invariant_fit(sae: SAE, acts: Tensor) -> dict[str, float]:
    """What an SAE returns for every member of an orbit, for orbit activations ``acts``
    ``(n, G, d)`` whose entry ``[i, 0]`` is the intended target: ``r2_target``, the pooled R² of
    ``D(E(ψ(g^p x)))`` against ``ψ(x)`` (how well it finds the canonical activation), and
    ``r2_orbit_mean``, against the orbit mean ``(1/G) Σ_q ψ(g^q x)`` — the best an encoder can do
    when nothing in the input tells which member is the target."""
    from esae.metrics import r2_pooled

    n, order, d = acts.shape
    recon = torch.stack([reconstruct(sae, acts[:, p].to(sae.W_dec.device)) if not isinstance(sae, EquivariantTopKSAE)
                         else sae.decode(sae.encode(acts[:, p].to(sae.W_dec.device))) for p in range(order)], 1).cpu()
    flat = lambda t: t.reshape(-1, d)  # noqa: E731
    return {"r2_target": r2_pooled(flat(acts[:, :1].expand_as(acts)), flat(recon)),
            "r2_orbit_mean": r2_pooled(flat(acts.mean(1, keepdim=True).expand_as(acts)), flat(recon))}


@torch.no_grad()
def latent_statistics(sae: SAE, acts: Tensor, batch_size: int = 4096) -> dict[str, Tensor]:
    """Per-latent statistics over activations ``acts`` ``(n, d)``: ``frequency`` (fraction of rows
    where the latent fires), ``mean_active`` (its mean value when it fires, 0 if never) and
    ``top_row`` (the row that activates it most): each ``(F,)``."""
    count = torch.zeros(sae.cfg.d_sae)
    total = torch.zeros(sae.cfg.d_sae)
    best = torch.full((sae.cfg.d_sae,), -torch.inf)
    top = torch.zeros(sae.cfg.d_sae, dtype=torch.long)
    for start in range(0, acts.shape[0], batch_size):
        z = sae.encode(acts[start:start + batch_size].to(sae.W_dec.device)).cpu()
        count += (z != 0).sum(0)
        total += z.sum(0)
        val, row = z.max(0)
        better = val > best
        best[better], top[better] = val[better], row[better] + start
    return {"frequency": count / acts.shape[0], "mean_active": total / count.clamp_min(1), "top_row": top}


# ---------------------------------------------------------------------------------------------
# Understanding the features
# ---------------------------------------------------------------------------------------------

def data_basis(acts: Tensor, variance: float = 0.999) -> Tensor:
    """Orthonormal rows ``(r, d)`` spanning the principal subspace of activations ``acts``
    ``(n, d)`` (centred) that holds ``variance`` of their variance: where the base model's
    activations actually go. M is fitted only there — in the other directions nothing moves it
    from its identity start — so features are scored inside this span (:func:`feature_scores`)."""
    check_float("variance", variance, 0.0, 1.0, lo_open=True)
    centred = (acts - acts.mean(0)).double()
    _, sv, vh = torch.linalg.svd(centred, full_matrices=False)
    share = sv.pow(2).cumsum(0) / sv.pow(2).sum()
    rank = int((share < variance).sum()) + 1
    return vh[:rank].to(acts.dtype)


def feature_scores(w_dec: Tensor, m: Tensor, basis: Tensor | None = None) -> Tensor:
    """``cos(d_j, M d_j)`` for every dictionary row ``d_j`` of ``w_dec`` ``(F, d)``: ``(F,)``;
    with ``basis`` ``(r, d)`` (:func:`data_basis`) each row is first projected onto that span.

    For an orthogonal M with M⁴ = I the cosine is ``w₊₁ − w₋₁``, the fractions of the feature's
    energy on M's eigenvalue-+1 (invariant) and −1 eigenspaces (the ±i pairs, 90° rotations,
    contribute 0). A score ≥ τ therefore guarantees that at least a fraction τ of the feature
    lies in the invariant subspace; equivariant features (moving to another direction when the
    image turns) score near 0, sign-flipping ones near −1."""
    if basis is not None:
        w_dec = (w_dec @ basis.t()) @ basis
    moved = w_dec @ m.t()
    return F.cosine_similarity(w_dec, moved, dim=-1)


def invariant_fraction(w_dec: Tensor, m: Tensor, order: int = 4, basis: Tensor | None = None) -> Tensor:
    """Fraction of each dictionary row's energy in M's invariant subspace, ``d·Pd / ‖d‖²`` with
    the group average ``P = (1/|G|) Σ_p M^p`` (the projector onto the fixed subspace when M is
    an exact orthogonal representation): ``(F,)``, a cross-check of :func:`feature_scores`
    (rows projected onto ``basis`` first, as there)."""
    check_int("order", order, 1)
    if basis is not None:
        w_dec = (w_dec @ basis.t()) @ basis
    avg = sum(torch.linalg.matrix_power(m, p) for p in range(order)) / order
    return (w_dec * (w_dec @ avg.t())).sum(-1) / w_dec.pow(2).sum(-1).clamp_min(1e-12)


def classify_features(scores: Tensor, threshold: float) -> Tensor:
    """Boolean ``(F,)``: True for invariant features (``score ≥ threshold``)."""
    check_float("threshold", threshold, -1.0, 1.0)
    return scores >= threshold


@torch.no_grad()
def feature_images(sae: EquivariantTopKSAE, decode: Callable[[Tensor], Tensor], latents: list[int],
                   magnitude: Tensor, order: int | None = None) -> Tensor:
    """What each feature draws, in every orientation: ``(len(latents), order, *image)``.

    Entry ``[i, p]`` is ``decode(M^p (b + a_i d_i)) − decode(M^p b)`` — the base model's image of
    the bias-only reconstruction plus feature ``d_i`` at its typical magnitude ``a_i``
    (``magnitude`` ``(len(latents),)``), minus the bias-only image: the part of the picture the
    feature adds, rotated by ``M^p`` as the equivariant SAE would."""
    order = order or sae.cfg.group_order
    idx = torch.as_tensor(latents, dtype=torch.long, device=sae.W_dec.device)
    mag = torch.as_tensor(magnitude, dtype=sae.W_dec.dtype, device=sae.W_dec.device).expand(len(latents))
    with_feature = sae.b_dec[None] + mag[:, None] * sae.W_dec[idx]  # (L, d)
    out = []
    for p in range(order):
        mp = sae.m_power(p).t()
        out.append(decode(with_feature @ mp) - decode(sae.b_dec[None] @ mp))
    return torch.stack(out, 1).cpu()


def synthetic_orbit(n: int, d: int = 256, *, n_atoms: int = 512, active: int = 8, invariant_dims: int | None = None,
                    order: int = 4, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Synthetic orbit activations with an exactly known M, for tests and benchmarks.

    M ``(d, d)`` is an orthogonal representation of C_order (order 2 or 4): ``Q R Qᵀ`` with R the
    identity on the first ``invariant_dims`` (default d/4) coordinates and 2×2 rotations by
    360°/order elsewhere. Canonical activations are sums of ``active`` of ``n_atoms`` random
    dictionary atoms with positive magnitudes; ``acts[i, p] = M^p acts[i, 0]``. Returns
    ``(acts (n, order, d), M)``."""
    check_int("n", n, 1)
    check_int("d", d, 2)
    check_choice("order", order, (2, 4))
    invariant_dims = d // 4 if invariant_dims is None else invariant_dims
    check_int("invariant_dims", invariant_dims, 0, d)
    if (d - invariant_dims) % 2:
        raise ValueError(f"d - invariant_dims must be even (2×2 rotation blocks), got {d - invariant_dims}")
    check_int("active", active, 1, n_atoms)
    gen = torch.Generator().manual_seed(seed)
    angle = 2 * math.pi / order
    block = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    r = torch.block_diag(torch.eye(invariant_dims), *[block] * ((d - invariant_dims) // 2))
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen))
    m = q @ r @ q.t()
    atoms = F.normalize(torch.randn(n_atoms, d, generator=gen), dim=-1)
    chosen = torch.rand(n, n_atoms, generator=gen).topk(active, dim=-1).indices
    mags = torch.rand(n, active, generator=gen) + 0.5
    canonical = F.embedding_bag(chosen, atoms, mode="sum", per_sample_weights=mags)
    acts = torch.stack([canonical @ torch.linalg.matrix_power(m, p).t() for p in range(order)], 1)
    return acts, m


# ---------------------------------------------------------------------------------------------
# The invariant SAE's target: which member of each orbit is canonical
# ---------------------------------------------------------------------------------------------


def canonical_for_layout(layout: str) -> str:
    """The invariant SAE's target under dataset ``layout`` (chapter 2): the ``generated`` image
    under ``upright`` (its rotation is known), the smallest-label-code member under
    ``independent`` (:func:`canonical_rotation`: there the generated image is not identifiable)."""
    check_choice("layout", layout, ("upright", "independent"))
    return "generated" if layout == "upright" else "label_code"


def canonical_rotation(shapes: Any, orientations: Any) -> np.ndarray:
    """For labelled images (``shapes``, ``orientations`` ``(n, 4)``, chapter 2), the rotation
    ``c`` ``(n,)`` in 0..3 such that ``g^c x`` is the canonical representative of x's orbit: the
    member with the smallest label code — sprite ids ``shape · 4 + orientation`` read as base-32
    digits, position 3 most significant — the code whose minimum over the orbit is chapter 2's
    orbit key (:func:`esae.shapes.orbit_keys`).

    Why not the generated image itself: shapes are drawn in independently random orientations,
    so every rotation of a generated image is an equally likely generated image, and nothing in
    ``ψ(g^p x)`` tells which rotation to undo. An invariant SAE trained toward the generated image
    can only learn the orbit mean, which M leaves unchanged. The smallest-code member is a
    function of the image's content, so an encoder can learn to find it."""
    from esae.shapes import rotate_labels

    codes = []
    for k in range(4):
        s, o = rotate_labels(shapes, orientations, k)
        codes.append(((s * 4 + o) * (32 ** np.arange(s.shape[1]))).sum(1))
    return np.argmin(np.stack(codes), 0)


def target_rotation(dataset: Any, canonical: str) -> np.ndarray:
    """The rotation ``c`` ``(n,)`` with ``g^c x`` the invariant SAE's target image for each image of
    ``dataset`` (an ``esae.shapes.ShapesDataset``): ``generated`` — the generated image, ``c = −p``
    under the ``upright`` layout (``dataset.rotations`` = p) and ``c = 0`` (the image itself) under
    ``independent``; ``label_code`` — :func:`canonical_rotation` of its labels."""
    check_choice("canonical", canonical, CANONICAL_CHOICES)
    if canonical == "label_code":
        return canonical_rotation(dataset.shapes, dataset.orientations)
    if getattr(dataset, "rotations", None) is None:
        return np.zeros(len(dataset.shapes), dtype=np.int64)
    return (-np.asarray(dataset.rotations, dtype=np.int64)) % 4


def training_targets(model: nn.Module, dataset: Any, canonical: str = "generated",
                     device: torch.device | str | None = None) -> Tensor:
    """Orbit activations ``(n, 4, d)`` of ``dataset`` re-indexed so that ``[i, 0]`` is the invariant
    SAE's target (:func:`target_rotation`) and ``[i, p]`` its rotation by ``g^p``: what
    :func:`train_sae` trains on."""
    return canonical_orbit(orbit_acts(model, dataset.images, device=device), target_rotation(dataset, canonical))


def canonical_orbit(orbit: Tensor, rotation: Any) -> Tensor:
    """Re-index an orbit tensor ``(n, G, ...)`` (``orbit[i, q] = g^q x_i`` or its activation) so
    that entry ``[i, p]`` is rotation ``p`` of the canonical image ``g^{c_i} x_i``:
    ``out[i, p] = orbit[i, (c_i + p) mod G]`` with ``rotation = c`` ``(n,)``."""
    c = torch.as_tensor(np.asarray(rotation), dtype=torch.long, device=orbit.device)
    if c.shape != orbit.shape[:1]:
        raise ValueError(f"rotation must have shape ({orbit.shape[0]},), got {tuple(c.shape)}")
    idx = (c[:, None] + torch.arange(orbit.shape[1], device=orbit.device)) % orbit.shape[1]
    return orbit[torch.arange(orbit.shape[0], device=orbit.device)[:, None], idx]


def orbit_acts(model: Callable[[Tensor], Tensor] | nn.Module, images: Tensor, order: int = 4,
               device: torch.device | str | None = None, *, act: Callable[[int, Tensor], Tensor] | None = None,
               batch_size: int = 1024) -> Tensor:
    """``(n, order, d)`` activations of every transform of ``images`` ``(n, ...)``:
    ``[i, p] = ψ(g^p x_i)``, with ``p = 0`` the image itself (the canonical one), on the CPU —
    what :func:`train_sae` trains on. ``model``: any callable ``activations(inputs) -> (n, d)``
    or one of the book's base autoencoders; ``act(p, inputs)``: the action on inputs (default:
    rotation of the last two axes). See :func:`esae.orbits.orbit`."""
    from esae.orbits import orbit

    return orbit(model, images, order, act=act, batch_size=batch_size, device=device)


def _quiet_sae_lens() -> None:
    warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")


_quiet_sae_lens()
