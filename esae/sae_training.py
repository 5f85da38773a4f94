"""Training the SAEs of :mod:`esae.saes` with sae-lens's ``SAETrainer``, and their targets (chapter 5).

Regular, wide and two-layer SAEs are trained on rotation-augmented activations (each sample
drawn with a uniformly random rotation p ∈ {0, 1, 2, 3} every epoch); the invariant SAE sees the
same inputs, but its target is always the canonical activation (:func:`orbit_batches`).
:func:`train_sae` runs sae-lens's ``SAETrainer`` (Adam, gradient clipping, dead-latent tracking,
the AuxK loss for dead latents) through its public ``step`` seam. The trainer only ever looks at a
batch's first axis, so a batch of (input, target) pairs stacked on axis 1, ``(B, 2, d)``, passes
through it unchanged to the SAE's training pass (:mod:`esae.sae_kernels`), which reads the target
from it: that is the whole extension the invariance loss needs.

Which member of each orbit is the invariant SAE's target: :func:`target_rotation` (the generated
image, or the smallest label code where the generated image is not identifiable), applied to orbit
activations by :func:`canonical_orbit`; :func:`orbit_acts` and :func:`training_targets` compute
what :func:`train_sae` trains on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sae_lens import SAE
from sae_lens.config import SAETrainerConfig
from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens.training.sae_trainer import SAETrainer
from torch import nn

from esae.checks import check_choice, check_float, check_int
from esae.runtime import progress
from esae.saes import (TRAINED_NAMES, FastTopKTrainingSAE, TwoLayerTopKTrainingSAE, TwoLayerTopKTrainingSAEConfig,
                       ensure_registered)

Tensor = torch.Tensor

CANONICAL_CHOICES = ("label_code", "generated")


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
    (without touching the global random state), then moved to ``device``: the weights are drawn
    on the CPU whatever the device, so a GPU starts from the CPU's initial SAE."""
    common = dict(d_in=config.d_in, d_sae=config.d_sae, k=config.k, device="cpu",
                  aux_loss_coefficient=config.aux_coefficient)
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(config.seed)  # the CPU generator alone, restored after
        if config.two_layer:
            sae = TwoLayerTopKTrainingSAE(TwoLayerTopKTrainingSAEConfig(d_hidden=config.d_hidden, **common))
        else:
            sae = FastTopKTrainingSAE(TopKTrainingSAEConfig(**common))
    return sae if torch.device(device).type == "cpu" else sae.to(device)


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
