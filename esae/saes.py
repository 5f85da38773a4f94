"""Sparse autoencoders over base-model activations: the architectures, on sae-lens (chapter 5).

The four SAEs of the paper, all over the 256-d middle-layer activations ψ of a base autoencoder:

- ``regular``: a TopK SAE with linear encoder and decoder, ``expansion`` (8) × d_in = 2,048 latents;
- ``wide``: the same with |G| = 4 times the latents (8,192), room for one latent per orientation;
- ``two_layer``: encoder Linear(256, 512) → ReLU → Linear(512, 2,048), linear decoder;
- ``invariant``: the two-layer SAE trained with the invariance loss
  ``L_inv = E_{x,p} ‖ψ(x) − D(E(ψ(g^p x)))‖²`` (input: the activation of a rotated image; target:
  the activation of the canonical, generated image);
- ``equivariant``: the invariant SAE plus the matrix M of chapter 4; the reconstruction of
  ψ(g^p x) is ``M^p D(E(ψ(g^p x)))``.

**sae-lens throughout.** Regular and wide SAEs are sae-lens's own ``TopKSAE`` (architecture
``"topk"``) and reload with plain sae-lens. The two-layer encoder is the architecture
``"two_layer_topk"`` and the equivariant SAE ``"equivariant_topk"`` (weights + M in one
``sae_weights.safetensors``), both registered with sae-lens's registry on import, so
``sae_lens.SAE.load_from_disk(path)`` rebuilds them (:func:`load_sae`). The training classes
(:class:`FastTopKTrainingSAE`, :class:`TwoLayerTopKTrainingSAE`) are sae-lens's ``TopKTrainingSAE``
with the sparse training pass of :mod:`esae.sae_kernels` (the same loss and gradients, about a
quarter of the dense work), which also accepts the invariance loss's (input, target) pairs.

Training lives in :mod:`esae.sae_training` (configs, sae-lens's ``SAETrainer``, the invariant
SAE's targets), using a trained SAE in :mod:`esae.sae_evaluation` (the frontier metrics, feature
scores), training many SAEs at once in :mod:`esae.sae_stack`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from sae_lens import SAE, registry
from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig, TopKTrainingSAE, TopKTrainingSAEConfig
from torch import nn

from esae.checks import check_int
from esae.sae_kernels import _SparseTopKTraining

Tensor = torch.Tensor

SAE_NAMES = ("regular", "wide", "two_layer", "invariant", "equivariant")
TRAINED_NAMES = ("regular", "wide", "two_layer", "invariant")  # the equivariant SAE is invariant + M
BASE_MODELS = ("mlp", "cnn")
TWO_LAYER_ARCH = "two_layer_topk"
EQUIVARIANT_ARCH = "equivariant_topk"


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
