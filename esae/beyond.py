"""Chapters 4–6 as one function of a model and a C4 action, with error bars over seeds ("Beyond the paper").

The book's chapters 4–6 study two autoencoders on one synthetic dataset. To ask *when an
adaptively equivariant SAE pays off* on other data and other models, this module runs their
protocol on **any** base model given as callables and orbit activations:

1. :func:`orbit_activations` — ``ψ(g^p x)`` for p = 0..3 of a callable ``encode`` (any layer of
   any model) and any images acted on by ``torch.rot90``;
2. :func:`fit_m_on_orbits` — M fitted as chapter 5 uses it (least-squares start, then Adam on the
   paper's loss), its held-out R² per power p = 1..3 (pooled) and ``‖M⁴ − I‖ / ‖I‖``;
3. :func:`train_saes` — the regular, wide, two-layer and invariant TopK SAEs of chapter 5 trained
   together (:func:`esae.sae_stack.train_stacked`), and the equivariant SAE = invariant + M;
4. :func:`frontier` — L0, L1, explained variance and a spliced loss (any callable: the
   autoencoder's pixel MSE, a classifier's cross-entropy) per SAE and K;
5. :func:`probe_families` — XGBoost F1 of truncated reconstructions (the paper's RESULT 2 form)
   and of the base activations, per task family and truncation length L.

:func:`run_seed` chains them for one seed; :func:`shapes_seed` and :func:`digits_seed` are chapter
6b's two settings end to end (data, base model, then :func:`run_seed`), cached by
:func:`esae.pipeline.beyond_shapes_seed` and :func:`esae.pipeline.beyond_digits_seed`. Every probing
step can also run under the fair readings of RESULT 2 (``readings``: every SAE's probe gets the
rotation ``p``; the equivariant SAE estimates ``p``; :data:`esae.sae_probing.READINGS`), compared by
:func:`lead_margin`. Across seeds, :func:`mean_std` gives mean ± std and
the standard error, and :func:`verdict` says "leads"/"trails" (or "agrees"/"disagrees") only
when a difference exceeds two standard errors, "within noise" otherwise.

Pure functions of tensors, arrays and typed configs: nothing here reads a profile or the cache
(the probe fits themselves are memoised by :func:`esae.probing.probe_scores`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from esae.checks import check_float, check_int, check_int_list

Tensor = torch.Tensor

SAES = ("regular", "wide", "two_layer", "equivariant")
RIVALS = ("regular", "wide")  # RESULT 2: the equivariant SAE "outperforms regular and wide SAEs"


@dataclass(frozen=True)
class ComparisonConfig:
    """Sizes of one run of the chapter 4–6 protocol on a base model (one seed).

    SAEs (chapter 5): ``ks`` TopK values, ``expansion`` latents per input dimension (the wide SAE
    4× that), ``d_hidden`` the two-layer encoder's width, ``sae_epochs`` (``invariant_epochs`` for
    the invariant SAE), ``batch_size``, ``lr``, ``lr_decay_fraction``. M (chapter 4):
    ``m_epochs`` of Adam at ``m_lr`` after the least-squares start. Probing (chapter 6): XGBoost
    with ``xgb_estimators`` trees and ``xgb_max_bin`` bins at each truncation length of
    ``lengths``, over the tasks the caller passes, on ``n_jobs`` workers. ``saes``: which SAEs to
    train (the equivariant one needs the invariant one, trained with it). ``seed`` seeds the SAEs,
    M's batches and the probes."""

    ks: tuple[int, ...] = (8, 32)
    expansion: int = 8
    d_hidden: int = 512
    sae_epochs: int = 10
    invariant_epochs: int = 10  # the same budget as the other SAEs (the paper: 500 each)
    batch_size: int = 256
    lr: float = 3e-3
    lr_decay_fraction: float = 0.2
    m_epochs: int = 15
    m_lr: float = 1e-3
    m_batch_size: int = 256
    lengths: tuple[int, ...] = (1, 4, 32)
    xgb_estimators: int = 50
    xgb_max_bin: int = 32
    n_jobs: int = -1
    saes: tuple[str, ...] = SAES
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "ks", check_int_list("ks", list(self.ks), 1))
        object.__setattr__(self, "lengths", check_int_list("lengths", list(self.lengths), 1))
        check_int("expansion", self.expansion, 1, 1024)
        check_int("d_hidden", self.d_hidden, 1)
        check_int("sae_epochs", self.sae_epochs, 1)
        check_int("invariant_epochs", self.invariant_epochs, 1)
        check_int("batch_size", self.batch_size, 1)
        check_float("lr", self.lr, 0.0, 1.0, lo_open=True)
        check_float("lr_decay_fraction", self.lr_decay_fraction, 0.0, 1.0)
        check_int("m_epochs", self.m_epochs, 1)
        check_float("m_lr", self.m_lr, 0.0, 1.0, lo_open=True)
        check_int("m_batch_size", self.m_batch_size, 1)
        check_int("xgb_estimators", self.xgb_estimators, 1)
        check_int("xgb_max_bin", self.xgb_max_bin, 2)
        check_int("n_jobs", self.n_jobs, -1)
        if self.n_jobs == 0:
            raise ValueError("n_jobs must be a positive int or -1 (every core), got 0")
        if isinstance(self.saes, str) or not self.saes or any(s not in SAES for s in self.saes):
            raise ValueError(f"saes must be a non-empty list drawn from {', '.join(SAES)}, got {self.saes!r}")
        object.__setattr__(self, "saes", tuple(self.saes))
        check_int("seed", self.seed, 0)


# --------------------------------------------------------------------------------------------
# activations, M


@torch.no_grad()
def orbit_activations(encode: Callable[[Tensor], Tensor], images: Tensor, order: int = 4, *,
                      batch_size: int = 2048, device: torch.device | str | None = None) -> Tensor:
    """``(n, order, d)`` float32 CPU activations of every rotation of ``images`` ``(n, C, H, H)``:
    entry ``[i, p] = encode(g^p x_i)``, ``g`` = ``torch.rot90`` on the last two axes (p = 0: the image
    itself). ``encode`` is any callable from a batch of images to ``(batch, d)`` activations — a
    layer of any model; batches go to ``device`` (default: where ``images`` are)."""
    from esae.groups import rotate

    check_int("order", order, 1)
    check_int("batch_size", batch_size, 1)
    if images.ndim < 3 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"images must be (n, ..., H, H) with square last axes, got {tuple(images.shape)}")
    device = images.device if device is None else torch.device(device)
    out = []
    for p in range(order):
        rotated = rotate(images, p)
        out.append(torch.cat([encode(rotated[i:i + batch_size].to(device)).float().cpu()
                              for i in range(0, len(images), batch_size)]))
    return torch.stack(out, 1)


def _every_start(orbit: Tensor) -> tuple[Tensor, Tensor]:
    """Orbit activations ``(n, G, d)`` as M's data with every member as a starting point, as in chapter
    4 (whose images come in all orientations): ``acts`` ``(G n, d)`` (row ``G i + q`` = ψ(g^q x_i)) and
    ``rotated`` ``(G − 1, G n, d)`` with ``rotated[p − 1]`` the same rows turned by ``g^p``."""
    n, order, d = orbit.shape
    acts = orbit.reshape(n * order, d)
    rotated = torch.stack([orbit.roll(-p, dims=1).reshape(n * order, d) for p in range(1, order)])
    return acts, rotated


def fit_m_on_orbits(train: Tensor, test: Tensor, config: ComparisonConfig = ComparisonConfig(), *,
                    device: torch.device | str = "cpu") -> dict[str, Any]:
    """Fit M on orbit activations ``train`` ``(n, 4, d)`` as chapter 5 uses it (least-squares start,
    then ``m_epochs`` of Adam on the paper's loss) and score it on ``test`` ``(m, 4, d)``; every
    member of an orbit serves as a starting point ψ(x), as the rotated images of chapter 4 do.

    Returns ``m`` ``(d, d)``, ``r2`` {"p": pooled R² of ``M^p ψ(x)`` against ``ψ(g^p x)``} for p = 1..3,
    ``r2_mean`` (their mean), ``r2_identity_mean`` (the same for M = I, the baseline) and
    ``m4_error`` = ``‖M⁴ − I‖_F / ‖I‖_F``."""
    from esae.equivariance import FitConfig, fit_m, r2
    from esae.groups import power_error

    for name, t in (("train", train), ("test", test)):
        if t.ndim != 3 or t.shape[1] != 4:
            raise ValueError(f"{name} must be (n, 4, d) orbit activations, got {tuple(t.shape)}")
    fit_cfg = FitConfig(order=4, epochs=config.m_epochs, batch_size=config.m_batch_size, lr=config.m_lr,
                        init="lstsq", seed=config.seed)
    m = fit_m(*_every_start(train), fit_cfg, device=device).m
    acts, rotated = _every_start(test)
    scored = r2(acts, rotated, m)
    identity = r2(acts, rotated, torch.eye(m.shape[0]))
    return {"m": m, "r2": {str(p): scored["pooled"][p] for p in (1, 2, 3)}, "r2_mean": scored["pooled_mean"],
            "r2_identity_mean": identity["pooled_mean"], "m4_error": power_error(m.double(), 4)}


# --------------------------------------------------------------------------------------------
# SAEs


def sae_configs(config: ComparisonConfig, d_in: int) -> dict[tuple[str, int], Any]:
    """The :class:`esae.sae_training.SAETrainConfig` of every trained SAE, keyed by ``(name, k)``: the names
    of ``config.saes`` with ``equivariant`` replaced by ``invariant`` (its trained part)."""
    from esae.sae_training import SAETrainConfig

    names = [("invariant" if n == "equivariant" else n) for n in config.saes]
    out = {}
    for k in config.ks:
        for name in names:
            out[(name, k)] = SAETrainConfig(
                name=name, k=k, d_in=d_in, expansion=config.expansion, d_hidden=config.d_hidden,
                n_epochs=config.invariant_epochs if name == "invariant" else config.sae_epochs,
                batch_size=config.batch_size, lr=config.lr, lr_decay_fraction=config.lr_decay_fraction,
                canonical="generated", seed=config.seed)
    return out


def train_saes(train: Tensor, config: ComparisonConfig, m: Tensor | None = None, *,
               device: torch.device | str = "cpu") -> dict[tuple[str, int], Any]:
    """Train the SAEs of ``config`` together on orbit activations ``train`` ``(n, 4, d)`` (entry
    ``[i, 0]`` the canonical member, the invariant SAE's target) and build each equivariant SAE
    from its invariant one and ``m`` ``(d, d)``. Returns inference SAEs keyed by ``(name, k)``, name
    in ``config.saes`` (plus ``invariant`` when the equivariant SAE is asked for)."""
    from esae.sae_stack import train_stacked
    from esae.saes import EquivariantTopKSAE

    configs = sae_configs(config, train.shape[2])
    if "equivariant" in config.saes and m is None:
        raise ValueError("m (the fitted M, (d, d)) is required to build the equivariant SAE")
    results = train_stacked(list(configs.values()), train, device, desc=f"{len(configs)} SAEs together")
    out = {key: r.sae for key, r in zip(configs, results)}
    if "equivariant" in config.saes:
        for k in config.ks:
            inv = out[("invariant", k)]
            out[("equivariant", k)] = EquivariantTopKSAE.from_invariant(inv, m.to(inv.W_dec.device))
    return out


@torch.no_grad()
def frontier(sae_set: dict[tuple[str, int], Any], orbit: Tensor,
             spliced_loss: Callable[[Tensor], float] | None = None) -> dict[str, dict[str, float | None]]:
    """Frontier metrics (chapter 5) of every SAE on held-out orbit activations ``orbit`` ``(n, 4, d)``
    (flattened row ``4 i + p`` = ``ψ(g^p x_i)``, so the equivariant SAE reconstructs with ``M^p``):
    ``l0``, ``l1``, ``explained_variance`` and ``spliced`` = ``spliced_loss(x̂)`` of the
    reconstructions ``x̂`` ``(4 n, d)`` in that row order (None without ``spliced_loss``). Keys
    ``"<name>/k<K>"``; ``"base"`` holds ``spliced_loss`` of the activations themselves."""
    from esae.sae_evaluation import evaluate
    from esae.saes import EquivariantTopKSAE

    n, order, d = orbit.shape
    flat = orbit.reshape(-1, d)
    powers = torch.arange(order).repeat(n)
    out: dict[str, dict[str, float | None]] = {"base": {"spliced": spliced_loss(flat) if spliced_loss else None}}
    for (name, k), sae in sae_set.items():
        device = sae.W_dec.device
        stats = evaluate(sae, flat, powers)
        x = flat.to(device)
        recon = sae.decode(sae.encode(x))
        if isinstance(sae, EquivariantTopKSAE):
            recon = sae.transform(recon, powers.to(device))
        out[f"{name}/k{k}"] = {"l0": stats["l0"], "l1": stats["l1"], "explained_variance": stats["explained_variance"],
                               "spliced": spliced_loss(recon) if spliced_loss else None}
    return out


# --------------------------------------------------------------------------------------------
# probing


@dataclass
class ProbeSet:
    """What the probes see for one base model: activations ``(n, d)`` of the probe-training and
    test images, their task labels ``(n, T)`` bool, each task's family ``(T,)``, and each image's
    rotation ``p`` from its orbit's canonical member (the equivariant SAE decodes with ``M^p``).
    ``family_order`` lists the families reported (default: as they first appear); ``combined``
    names unions of families also reported (e.g. ``{"equivariant": ("SO", "SP", "SPO")}``)."""

    acts_train: np.ndarray
    acts_test: np.ndarray
    labels_train: np.ndarray
    labels_test: np.ndarray
    families: list[str]
    p_train: np.ndarray
    p_test: np.ndarray
    family_order: tuple[str, ...] = field(default=())
    combined: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.labels_train.shape[1] != len(self.families) or self.labels_test.shape[1] != len(self.families):
            raise ValueError(f"families must name each of the {self.labels_train.shape[1]} tasks, got {len(self.families)}")
        if not self.family_order:
            self.family_order = tuple(dict.fromkeys(self.families))


def family_means(f1: np.ndarray, families: Sequence[str], order: Sequence[str],
                 combined: dict[str, tuple[str, ...]] | None = None) -> dict[str, float | None]:
    """Mean F1 ``(T,)`` per task family of ``order``, per union of families in ``combined``, and over
    all tasks (``all``); NaN (degenerate) tasks are skipped, an empty selection gives None."""
    f1 = np.asarray(f1, dtype=float)
    fam = np.asarray(list(families))
    if len(fam) != len(f1):
        raise ValueError(f"families must name each of the {len(f1)} tasks, got {len(fam)}")
    combined = combined or {}
    out = {}
    for name in (*order, *combined, "all"):
        sel = (np.ones(len(f1), bool) if name == "all" else np.isin(fam, combined[name]) if name in combined
               else fam == name)
        vals = f1[sel & ~np.isnan(f1)]
        out[name] = float(vals.mean()) if vals.size else None
    return out


def probe_families(sae_set: dict[tuple[str, int], Any], probe_set: ProbeSet, config: ComparisonConfig,
                   names: Sequence[str] | None = None,
                   readings: Sequence[str] = ("paper",)) -> dict[str, dict[str, float | None]]:
    """XGBoost F1 (chapter 6's probe and truncation) at every L of ``config.lengths`` on the base
    activations (key ``"activations/L<L>"``) and on the truncated reconstructions of each SAE in
    ``names`` (default ``config.saes``) and K (key ``"<name>/k<K>/L<L>"``), as task-family means.

    ``readings`` (:data:`esae.sae_probing.READINGS`) says who gets the rotation ``p``: ``paper`` (the keys
    above: the equivariant SAE decodes with the true ``p``, no other SAE gets it); ``onehot_p``
    (keys ``"onehot_p:<name>/k<K>/L<L>"``: every SAE's probe also gets ``p`` one-hot); ``estimated_p``
    (keys ``"estimated_p:equivariant/k<K>/L<L>"``: the equivariant SAE with ``p̂`` estimated from the
    activation, :func:`esae.sae_probing.estimate_rotation`)."""
    from esae.probing import ProbeConfig, probe_scores
    from esae.sae_probing import READINGS, encode, reconstruction_input, sae_decoder

    names = config.saes if names is None else tuple(names)
    if isinstance(readings, str) or not readings or any(r not in READINGS for r in readings):
        raise ValueError(f"readings must be a non-empty list drawn from {', '.join(READINGS)}, got {readings!r}")
    pc = ProbeConfig(xgb_estimators=config.xgb_estimators, xgb_max_bin=config.xgb_max_bin, seed=config.seed)
    common = dict(probes=("xgboost",), config=pc, n_jobs=config.n_jobs)
    ps = probe_set
    todo = []
    if "paper" in readings:
        todo.append(("activations", {"x_train": ps.acts_train, "x_test": ps.acts_test}))
    for k in config.ks:
        for name in names:
            sae = sae_set[(name, k)]
            encoded = (encode(sae, torch.from_numpy(ps.acts_train)), encode(sae, torch.from_numpy(ps.acts_test)),
                       sae_decoder(sae))
            for reading in readings:
                if reading == "estimated_p" and name != "equivariant":
                    continue
                prefix = "" if reading == "paper" else f"{reading}:"
                todo.append((f"{prefix}{name}/k{k}", reconstruction_input(
                    sae, ps.acts_train, ps.acts_test, ps.p_train, ps.p_test, reading, encoded=encoded)))
    out = {}
    for key, inputs in todo:
        for L in config.lengths:
            if L > inputs["x_train"].shape[1]:
                raise ValueError(f"each of lengths must be at most the {inputs['x_train'].shape[1]} dimensions of {key}, "
                                 f"got {L}")
            scores = probe_scores(labels_train=ps.labels_train, labels_test=ps.labels_test, L=L, desc=f"{key}/L{L}",
                                  **inputs, **common)
            out[f"{key}/L{L}"] = family_means(scores.f1["xgboost"], ps.families, ps.family_order, ps.combined)
    return out


def rotation_accuracy(sae_set: dict[tuple[str, int], Any], acts: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Share of images whose rotation each equivariant SAE estimates correctly from its activation
    (:func:`esae.sae_probing.estimate_rotation` on ``acts`` ``(n, d)`` against the true ``p`` ``(n,)``), keyed
    ``"k<K>"``."""
    from esae.sae_probing import estimate_rotation

    return {f"k{k}": float(np.mean(estimate_rotation(sae, acts) == np.asarray(p)))
            for (name, k), sae in sae_set.items() if name == "equivariant"}


def run_seed(train_orbit: Tensor, heldout_orbit: Tensor, probe_set: ProbeSet, config: ComparisonConfig, *,
             spliced_loss: Callable[[Tensor], float] | None = None, readings: Sequence[str] = ("paper",),
             device: torch.device | str = "cpu") -> dict[str, Any]:
    """Chapters 4–6 for one seed on one base model: M (when the equivariant SAE is compared), the
    SAEs, their frontier on ``heldout_orbit`` and the probes. Returns plain data: ``m`` (R² per
    power, mean, identity baseline, M⁴ error; absent without the equivariant SAE), ``frontier``
    (:func:`frontier`), ``probe`` (:func:`probe_families` under ``readings``; with ``estimated_p`` also
    ``p_hat_accuracy``, :func:`rotation_accuracy` on the probe-test images) and ``seconds``, the wall
    time of each step (the only entry that differs between two runs of one seed)."""
    out: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        seconds[name] = time.perf_counter() - clock
        clock = time.perf_counter()

    m = None
    if "equivariant" in config.saes:
        fit = fit_m_on_orbits(train_orbit, heldout_orbit, config, device=device)
        m = fit.pop("m")
        out["m"] = fit
        lap("m")
    sae_set = train_saes(train_orbit, config, m, device=device)
    lap("saes")
    shown = {key: sae for key, sae in sae_set.items() if key[0] in config.saes}
    out["frontier"] = frontier(shown, heldout_orbit, spliced_loss)
    lap("frontier")
    out["probe"] = probe_families(sae_set, probe_set, config, readings=readings)
    if "estimated_p" in readings and "equivariant" in config.saes:
        out["p_hat_accuracy"] = rotation_accuracy(sae_set, probe_set.acts_test, probe_set.p_test)
    lap("probe")
    out["seconds"] = seconds
    return out


# --------------------------------------------------------------------------------------------
# one seed of the two settings of chapter 6b (jittered shapes, digits)

#: the task families chapter 6b reports besides the groups: rotation-invariant and equivariant tasks
SHAPE_FAMILIES = {"invariant": ("S",), "equivariant": ("SO", "SP", "SPO")}
DIGIT_FAMILIES = {"invariant": ("digit",), "equivariant": ("digit_orientation",)}


def shapes_probe_sets(seed: int, n_probe_train: int, n_probe_test: int, jitter: float):
    """The probing images of :func:`shapes_seed` for ``seed`` (upright layout, ``jitter``): the probes'
    training set (probe pool) and test set (held-out pool), as :class:`esae.shapes.ShapesDataset`."""
    from esae import shapes

    return (shapes.make_dataset(n_probe_train, 60_000 + seed, layout="upright", pool="probe", jitter=jitter),
            shapes.make_dataset(n_probe_test, 60_001 + seed, layout="upright", pool="heldout", jitter=jitter))


def shapes_seed(train_config, config: ComparisonConfig, *, jitter: float, task_indices: Sequence[int],
                n_probe_train: int, n_probe_test: int, readings: Sequence[str] = ("paper",),
                device: torch.device | str = "cpu") -> dict[str, Any]:
    """One seed of chapters 3–6 on the shapes dataset with ``jitter`` (chapter 6b, section 2): draw the
    upright training, held-out and probing images (seed ``config.seed``; the probe pools as chapter 6's
    ``probing_sets``), train the base model of ``train_config`` (:class:`esae.autoencoders.TrainConfig`,
    whose ``n_train``/``n_heldout`` size the sets), then :func:`run_seed` with the autoencoder's pixel
    MSE as the spliced loss, on the tasks ``task_indices`` of :func:`esae.shapes.probing_tasks`.
    Returns :func:`run_seed`'s numbers plus ``label_r2`` (chapter 3's, fitted on the training images,
    scored on the probe-test images), ``heldout_mse`` and ``seconds["base_model"]``."""
    from esae import autoencoders as ae
    from esae import shapes
    from esae.groups import rotate
    from esae.probing import GROUPS
    from esae.sae_probing import rotations_from_canonical

    check_float("jitter", jitter, 0.0, 1.0)
    check_int("n_probe_train", n_probe_train, 1)
    check_int("n_probe_test", n_probe_test, 1)
    s = config.seed
    all_tasks = shapes.probing_tasks()
    tasks = [all_tasks[int(i)] for i in task_indices]
    train = shapes.make_dataset(train_config.n_train, s, layout="upright", pool="train", jitter=jitter)
    held = shapes.make_dataset(train_config.n_heldout, s + 10_000, layout="upright", pool="heldout", jitter=jitter)
    ptrain, ptest = shapes_probe_sets(s, n_probe_train, n_probe_test, jitter)
    start = time.perf_counter()
    net, history = ae.train(train_config, device=device, train_set=train, heldout=held)
    base_seconds = time.perf_counter() - start
    train_orbit = orbit_activations(net.encode, train.canonical().images, device=device)
    held_can = held.canonical()
    held_orbit = orbit_activations(net.encode, held_can.images, device=device)
    orbit_images = torch.stack([rotate(held_can.images, p) for p in range(4)], 1).flatten(0, 1)

    def spliced(recon: Tensor) -> float:  # the autoencoder's pixel MSE with ψ replaced
        with torch.no_grad():
            return float((net.decode(recon.to(device)).cpu() - orbit_images).pow(2).mean())

    acts = {name: ae.activations(net, d.images, device=device).float().cpu().numpy()
            for name, d in (("train", ptrain), ("test", ptest))}
    probe_set = ProbeSet(acts["train"], acts["test"], shapes.task_labels(ptrain, tasks), shapes.task_labels(ptest, tasks),
                         [t.group for t in tasks], rotations_from_canonical(ptrain), rotations_from_canonical(ptest),
                         family_order=GROUPS, combined=SHAPE_FAMILIES)
    out = run_seed(train_orbit, held_orbit, probe_set, config, spliced_loss=spliced, readings=readings, device=device)
    out["label_r2"] = ae.label_r2(net, train, ptest)
    out["heldout_mse"] = history["heldout_mse"][-1]
    out["seconds"]["base_model"] = base_seconds
    return out


def digits_seed(classifier_config, config: ComparisonConfig, *, tasks: Sequence[Any],
                readings: Sequence[str] = ("paper",), device: torch.device | str = "cpu") -> dict[str, Any]:
    """One seed of chapters 4–6 on scikit-learn's digits (chapter 6b, section 3): split the originals
    into pools (:func:`esae.digits.pool_indices` of ``config.seed``), train the classifier of
    ``classifier_config`` (:class:`esae.digits.ClassifierConfig`) on the rotation-augmented training
    pool, then :func:`run_seed` on its hidden layer with the classifier's cross-entropy as the spliced
    loss and ``tasks`` (:func:`esae.digits.digit_tasks` entries) as the probes' tasks. Returns
    :func:`run_seed`'s numbers plus ``accuracy`` (held-out digits, all four orientations),
    ``accuracy_upright`` and ``seconds["base_model"]``."""
    from esae import digits

    s = config.seed
    pools = digits.pool_indices(s)
    images, labels = digits.originals()
    train_idx = torch.as_tensor(pools["train"])
    ptrain, ptest = digits.orbit_dataset(pools["probe"]), digits.orbit_dataset(pools["heldout"])
    start = time.perf_counter()
    net, _ = digits.train_classifier(classifier_config, images[train_idx], labels[pools["train"]], device=device)
    base_seconds = time.perf_counter() - start
    train_orbit = orbit_activations(net.encode, images[train_idx], device=device)
    held_orbit = orbit_activations(net.encode, images[torch.as_tensor(pools["heldout"])], device=device)
    held_digits = torch.as_tensor(np.repeat(labels[pools["heldout"]], 4))

    def spliced(recon: Tensor) -> float:  # the classifier's cross-entropy with its hidden layer replaced
        with torch.no_grad():
            return float(torch.nn.functional.cross_entropy(net.decode(recon.to(device)).cpu(), held_digits))

    acts = {name: orbit_activations(net.encode, d.images, 1, device=device)[:, 0].numpy()
            for name, d in (("train", ptrain), ("test", ptest))}
    tasks = list(tasks)
    probe_set = ProbeSet(acts["train"], acts["test"], digits.task_labels(ptrain, tasks), digits.task_labels(ptest, tasks),
                         [t.family for t in tasks], ptrain.rotations, ptest.rotations, family_order=digits.FAMILIES,
                         combined=DIGIT_FAMILIES)
    out = run_seed(train_orbit, held_orbit, probe_set, config, spliced_loss=spliced, readings=readings, device=device)
    out["accuracy"] = digits.accuracy(net, ptest.images, ptest.digits)
    upright = ptest.rotations == 0
    out["accuracy_upright"] = digits.accuracy(net, ptest.images[upright], ptest.digits[upright])
    out["seconds"]["base_model"] = base_seconds
    return out


# --------------------------------------------------------------------------------------------
# seeds: mean ± std and verdicts


def mean_std(values: Sequence[float | None]) -> dict[str, float | int | None]:
    """``{"mean", "std", "se", "n"}`` of the non-None ``values`` (std with ``n − 1``; ``std`` and the
    standard error ``se = std / √n`` are None for fewer than two values)."""
    vals = np.asarray([v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))], float)
    n = len(vals)
    if n == 0:
        return {"mean": None, "std": None, "se": None, "n": 0}
    std = float(vals.std(ddof=1)) if n > 1 else None
    return {"mean": float(vals.mean()), "std": std, "se": std / math.sqrt(n) if std is not None else None, "n": n}


def verdict(differences: Sequence[float], *, positive: str = "leads", negative: str = "trails") -> tuple[str, dict]:
    """Test a claimed difference from its per-seed values (paired: each seed's ``a − b``): ``positive``
    when the mean exceeds two standard errors, ``negative`` when it is below minus two, ``"within
    noise"`` otherwise, and ``"untested (1 seed)"`` without an error bar. Returns the verdict and
    :func:`mean_std` of the differences."""
    stats = mean_std(differences)
    if stats["n"] == 0:
        return "untested (no value)", stats
    if stats["se"] is None:
        return "untested (1 seed)", stats
    if stats["mean"] > 2 * stats["se"]:
        return positive, stats
    if stats["mean"] < -2 * stats["se"]:
        return negative, stats
    return "within noise", stats


def line_ratio(stats: dict) -> float | None:
    """How far a :func:`verdict`'s mean lies from its line: ``|mean| / (2 · se)`` of :func:`mean_std`'s
    ``stats`` (above 1: beyond two standard errors; None without an error bar or with se 0). With
    three seeds the standard error is itself uncertain by about half, so a ratio within a factor 2
    of 1 is a verdict another draw of the same training can move across the line."""
    if stats.get("mean") is None or not stats.get("se"):
        return None
    return abs(stats["mean"]) / (2 * stats["se"])


def near_line(ratios: Mapping[str, float | None], factor: float = 2.0) -> list[str]:
    """The keys of ``ratios`` (:func:`line_ratio` per verdict) within ``factor`` of the two-standard-error
    line: ``1 / factor ≤ ratio ≤ factor``."""
    check_float("factor", factor, 1.0)
    return [key for key, r in ratios.items() if r is not None and 1 / factor <= r <= factor]


def reading_key(reading: str, name: str, k: int, L: int) -> str:
    """The key of :func:`probe_families`'s output for SAE ``name`` at ``K = k``, ``L`` under ``reading``:
    ``"<name>/k<K>/L<L>"`` for ``paper``, with ``"<reading>:"`` in front otherwise; an SAE a reading
    leaves unchanged (the rivals under ``estimated_p``) keeps its ``paper`` key."""
    from esae.sae_probing import READINGS

    if reading not in READINGS:
        raise ValueError(f"reading must be one of {', '.join(READINGS)}, got {reading!r}")
    if reading == "paper" or (reading == "estimated_p" and name != "equivariant"):
        return f"{name}/k{k}/L{L}"
    return f"{reading}:{name}/k{k}/L{L}"


def lead_margin(probe: dict[str, dict[str, float | None]], ks: Sequence[int], L: int, family: str,
                reading: str = "paper", rivals: Sequence[str] = RIVALS) -> float:
    """RESULT 2's margin for one seed: F1 of the equivariant SAE's truncated reconstructions minus the
    best rival's, on ``family`` at ``L``, mean over ``ks``, under ``reading`` (:func:`reading_key`;
    ``probe`` is :func:`probe_families`'s output)."""
    return float(np.mean([probe[reading_key(reading, "equivariant", k, L)][family]
                          - max(probe[reading_key(reading, r, k, L)][family] for r in rivals) for k in ks]))


def family_lead(probes: Sequence[dict[str, dict[str, float | None]]], ks: Sequence[int], L: int, family: str,
                groups: Sequence[str], reading: str = "paper", rivals: Sequence[str] = RIVALS) -> tuple[str, dict]:
    """RESULT 2 on a task family, judged per task group: ``probes`` holds one :func:`probe_families`
    output per seed; each group of ``groups`` (e.g. SO, SP, SPO for the shapes' orientation tasks)
    gets its paired per-seed :func:`lead_margin` and :func:`verdict`. The paper claims the lead on
    every group, so the family ``agrees`` only when every group leads beyond two standard errors,
    ``partly`` when some do, ``differs`` when none does and some trail beyond them, ``within noise``
    otherwise (one seed: the family mean's own verdict, untested). Returns the verdict and the
    :func:`mean_std` of the family mean's margin, with ``"groups"``: each group's verdict and stats
    (a mean over groups can hide one that goes the other way)."""
    pooled, stats = verdict([lead_margin(p, ks, L, family, reading, rivals) for p in probes],
                            positive="agrees", negative="differs")
    per = {g: verdict([lead_margin(p, ks, L, g, reading, rivals) for p in probes], positive="agrees", negative="differs")
           for g in groups}
    statuses = [v for v, _ in per.values()]
    if not statuses or any(v.startswith("untested") for v in statuses):
        out = pooled
    elif all(v == "agrees" for v in statuses):
        out = "agrees"
    elif "agrees" in statuses:
        out = "partly"
    else:
        out = "differs" if "differs" in statuses else "within noise"
    return out, {**stats, "groups": {g: {"verdict": v, **st} for g, (v, st) in per.items()}}


def fmt(stats: dict, digits: int = 3) -> str:
    """``mean ± std`` (or the mean alone for one seed) as text."""
    if stats.get("mean") is None:
        return "n/a"
    if stats.get("std") is None:
        return f"{stats['mean']:.{digits}f}"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"
