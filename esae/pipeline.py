"""The book's stages, each a function of its typed config (and of its upstream stages' configs),
kept in :mod:`esae.cache` by that config: the one module that knows the cache.

- base models (chapter 3): :class:`esae.autoencoders.TrainConfig` → cache kind ``base_model``
  (:func:`base_model`, :func:`base_models`);
- M (chapter 4): the base model's ``TrainConfig`` and a :class:`esae.equivariance.FitConfig` per
  variant → ``fitted_m`` (:func:`fit`, :func:`fitted_m`);
- SAEs (chapter 5): the base ``TrainConfig``, a :class:`esae.sae_training.SAETrainConfig` per SAE, and the
  ``FitConfig`` of M for the equivariant SAE → ``sae``, ``sae_equivariant`` (:func:`saes`,
  :func:`load_saes`, :func:`sae`);
- probe scores (chapter 6): the probed arrays, ``L`` and the probe's settings → ``probe_scores``
  (:func:`probe_panel`, :func:`probe_scores`);
- language models (chapter 7): :class:`esae.language_models.ActivationsConfig` and
  :class:`esae.jumprelu.TrainConfig` → ``gemma3_270m_converted``, ``residual_activations``,
  ``layer_sae``, ``sae_match_synthetic``, ``layer_pair_matches`` (:func:`language_model`,
  :func:`residual_activations`, :func:`layer_sae`, :func:`synthetic_layers`, :func:`match_stack`).

Every base model, fit of M, SAE and chapter-6b seed trains single-threaded on the CPU
(:func:`training_threads`), so its weights do not depend on the core count or on who trained it;
on a GPU (``device`` cuda) each is cached under a key of its own (:func:`trained_on`);
chapters 3, 4, 5 and 6b compute their independent models side by side in worker processes first
(:func:`prefetch_base_models`, :func:`prefetch_fits`, :func:`prefetch_saes`,
:func:`prefetch_beyond_seeds`; ``jobs`` workers), chapter 7 its layer SAEs
(:func:`prefetch_layer_saes`), and then find them in the cache.

A chapter turns its injected parameters into configs with :func:`base_model_configs`,
:func:`fit_configs` and :func:`sae_configs`; a chapter that needs an upstream stage builds that
stage's configs the same way from the upstream chapter's parameters, which the book injects into
it as ``upstream`` (:data:`esae.params.UPSTREAM`). Nothing here reads a profile. Every stage
computes what the cache lacks and loads the rest, so re-running a chapter retrains exactly what a
changed parameter touches.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from esae import autoencoders, cache
from esae.autoencoders import KINDS, TrainConfig, build, heldout_set, train, training_set
from esae.checks import check_choice
from esae.equivariance import VARIANTS, FitConfig, FitResult, fit_m, orbit_activations, variant_config
from esae.runtime import job_workers, run_jobs, torch_threads
from esae.shapes import LAYOUTS, ShapesDataset

if TYPE_CHECKING:
    from sae_lens import SAE

    from esae.sae_training import SAETrainConfig, TrainResult

Tensor = torch.Tensor
SAE_CACHE_VERSION = 4  # part of every SAE's cache key; 3: the stacked trainer's row gradients; 4: trained single-threaded


def _need(p: Mapping[str, Any], names: tuple[str, ...], chapter: str) -> None:
    missing = [n for n in names if n not in p]
    if missing:
        raise ValueError(f"{chapter}'s parameters must include {', '.join(missing)}; got {', '.join(map(str, p)) or 'none'}")


# --------------------------------------------------------------------------------------------
# chapter parameters -> configs


def dataset_layout(p02: Mapping[str, Any]) -> str:
    """The dataset layout of chapter 2's parameters ``p02`` (``upright`` or ``independent``)."""
    _need(p02, ("layout",), "02_dataset")
    return check_choice("layout", p02["layout"], LAYOUTS)


def other_layout(layout: str) -> str:
    """The other reading of the dataset (chapter 2)."""
    return "independent" if check_choice("layout", layout, LAYOUTS) == "upright" else "upright"


def seeds(p03: Mapping[str, Any]) -> list[int]:
    """The seeds behind the error bars of chapters 3–6, from chapter 3's parameters ``p03``:
    ``seed, seed + 1, ..., seed + n_seeds − 1``. Seed ``i`` of the list re-seeds every stage: the
    base models' data and training, M's batches, the SAEs and the probing split (:func:`reseeded`)."""
    from esae.checks import check_int

    _need(p03, ("seed", "n_seeds"), "03_base_models")
    check_int("n_seeds", p03["n_seeds"], 1, 100)
    return [p03["seed"] + i for i in range(p03["n_seeds"])]


def reseeded(p: Mapping[str, Any], offset: int) -> dict[str, Any]:
    """A chapter's parameters ``p`` with its ``seed`` moved by ``offset`` (the ``offset``-th seed of
    :func:`seeds`; 0 gives ``p`` itself, so seed 0's configs and cache entries are unchanged)."""
    _need(p, ("seed",), "the chapter")
    return {**p, "seed": p["seed"] + offset}


BASE_MODEL_PARAMETERS = ("n_train", "n_heldout", "mlp_epochs", "cnn_epochs", "batch_size", "lr", "seed")


def base_model_configs(p03: Mapping[str, Any], layout: str) -> dict[str, TrainConfig]:
    """The two :class:`TrainConfig` (``mlp``, ``cnn``) of chapter 3's parameters ``p03``
    (:data:`BASE_MODEL_PARAMETERS`; the seed seeds the data and the training) on the images of
    dataset ``layout``."""
    _need(p03, BASE_MODEL_PARAMETERS, "03_base_models")
    base = TrainConfig("mlp", layout=layout, n_train=p03["n_train"], n_heldout=p03["n_heldout"],
                       data_seed=p03["seed"], batch_size=p03["batch_size"], lr=p03["lr"], seed=p03["seed"])
    return {kind: replace(base, kind=kind, n_epochs=p03[f"{kind}_epochs"]) for kind in KINDS}


FIT_PARAMETERS = ("epochs", "paper_epochs", "constrained_epochs", "batch_size", "lr", "penalty", "seed")


def fit_configs(p04: Mapping[str, Any]) -> dict[str, FitConfig]:
    """The :class:`FitConfig` of every variant of chapter 4 (:data:`esae.equivariance.VARIANTS`)
    from its parameters ``p04`` (:data:`FIT_PARAMETERS`)."""
    _need(p04, FIT_PARAMETERS, "04_fitting_m")
    return {variant: variant_config(variant, epochs=p04["epochs"], constrained_epochs=p04["constrained_epochs"],
                                    batch_size=p04["batch_size"], lr=p04["lr"], penalty=p04["penalty"],
                                    seed=p04["seed"], paper_epochs=p04["paper_epochs"])
            for variant in VARIANTS}


SAE_PARAMETERS = ("ks", "expansion", "d_hidden", "n_epochs", "invariant_epochs", "batch_size", "lr",
                  "lr_decay_fraction", "aux_coefficient", "dead_window", "seed")


def sae_configs(p05: Mapping[str, Any], layout: str) -> dict[tuple[str, int], SAETrainConfig]:
    """The SAEs chapter 5 trains, keyed by ``(name, k)`` for every trained name (regular, wide,
    two_layer, invariant) and every K in ``ks``, from its parameters ``p05``
    (:data:`SAE_PARAMETERS`); the invariant SAE trains for ``invariant_epochs``, the others for
    ``n_epochs``, toward the canonical image of dataset ``layout``
    (:func:`esae.sae_training.canonical_for_layout`)."""
    from esae.checks import check_int_list
    from esae.sae_training import SAETrainConfig, canonical_for_layout
    from esae.saes import TRAINED_NAMES

    _need(p05, SAE_PARAMETERS, "05_equivariant_sae")
    check_int_list("ks", p05["ks"], 1)
    common = dict(canonical=canonical_for_layout(layout), expansion=p05["expansion"], d_hidden=p05["d_hidden"],
                  batch_size=p05["batch_size"], lr=p05["lr"], lr_decay_fraction=p05["lr_decay_fraction"],
                  aux_coefficient=p05["aux_coefficient"], dead_window=p05["dead_window"], seed=p05["seed"])
    epochs = {name: p05["n_epochs"] for name in TRAINED_NAMES}
    epochs["invariant"] = p05["invariant_epochs"]
    return {(name, k): SAETrainConfig(name=name, k=k, n_epochs=epochs[name], **common)
            for k in p05["ks"] for name in TRAINED_NAMES}


@dataclass(frozen=True)
class SeedConfigs:
    """The configs of one seed of chapters 3–5: base models, M fits and SAEs."""

    base: dict[str, autoencoders.TrainConfig]
    fits: dict[str, FitConfig]
    saes: dict[tuple[str, int], SAETrainConfig]


def seed_configs(p03: Mapping[str, Any], p04: Mapping[str, Any], p05: Mapping[str, Any], offset: int,
                 layout: str) -> SeedConfigs:
    """The configs of the ``offset``-th seed of :func:`seeds` (every chapter's seed moved by
    ``offset``, :func:`reseeded`) from chapters 3, 4 and 5's parameters, on dataset ``layout``."""
    return SeedConfigs(base=base_model_configs(reseeded(p03, offset), layout),
                       fits=fit_configs(reseeded(p04, offset)),
                       saes=sae_configs(reseeded(p05, offset), layout))


# --------------------------------------------------------------------------------------------
# base models (chapter 3)


TRAIN_THREADS = 1  # torch CPU threads of every base-model and SAE training here (see training_threads)


@contextmanager
def training_threads(device: torch.device | str) -> Iterator[None]:
    """The thread count of the book's trainings on the CPU: :data:`TRAIN_THREADS` (1), in this
    process or in a worker of :func:`prefetch_base_models` / :func:`prefetch_saes`. A thread count
    can change the order of float sums and, through TopK near-ties, the trained weights; fixing it
    makes a base model or SAE the same whether a worker or a chapter trained it, and on any number
    of cores. One thread is
    also the fast choice for these small steps when other jobs use the other cores (see
    :func:`esae.runtime.run_jobs`)."""
    if torch.device(device).type != "cpu":
        yield
        return
    with torch_threads(TRAIN_THREADS):
        yield


def trained_on(device: torch.device | str) -> dict[str, str]:
    """What a cache key adds for a training on ``device``: nothing on the CPU (every key of the
    book's CPU runs stays as it was), the device type elsewhere — a GPU sums in other orders (its
    matmul kernels, cuDNN's convolution backward, atomic adds), so its weights are not the CPU's
    and must not stand in for them, nor the CPU's for them."""
    kind = torch.device(device).type
    return {} if kind == "cpu" else {"device": kind}


def base_model_key(config: TrainConfig, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The cache key of base model ``config`` trained on ``device`` (its config, the training's
    thread count and, off the CPU, the device type: :func:`trained_on`)."""
    return {"config": config, "threads": TRAIN_THREADS, **trained_on(device)}


def base_model(config: TrainConfig, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The model of ``config`` and its training history (:func:`esae.autoencoders.train`),
    trained on ``device`` (single-threaded on the CPU, :func:`training_threads`) only when the
    cache holds no checkpoint for ``config``; eval mode, on ``device``."""
    device = torch.device(device)

    def compute() -> dict[str, Any]:
        with training_threads(device):
            model, history = train(config, device=device)
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        return {"config": asdict(config), "state_dict": state, "history": history}

    saved = cache.cached_torch("base_model", base_model_key(config, device), compute)
    model = build(config.kind)
    model.load_state_dict(saved["state_dict"])
    return model.to(device).eval(), saved["history"]


def base_models(configs: Mapping[str, TrainConfig], device: torch.device | str = "cpu") -> dict[str, nn.Module]:
    """``{kind: model}`` for the configs of :func:`base_model_configs` (cache hits after chapter 3)."""
    return {kind: base_model(config, device)[0] for kind, config in configs.items()}


# --------------------------------------------------------------------------------------------
# M (chapter 4)


def fit_key(base: TrainConfig, fits: Mapping[str, FitConfig], variant: str,
            device: torch.device | str = "cpu") -> dict[str, Any]:
    """The cache key (kind ``fitted_m``) of M fitted as ``fits[variant]`` says on base model ``base``,
    both on ``device`` (with the fit's thread count: see :func:`training_threads`; off the CPU the
    device type, :func:`trained_on`)."""
    check_choice("variant", variant, VARIANTS)
    return {"base_model": base_model_key(base, device), "model": base.kind, "fit": fits[variant],
            "threads": TRAIN_THREADS, **trained_on(device)}


def fit(base: TrainConfig, fits: Mapping[str, FitConfig], variant: str = "warm_start",
        device: torch.device | str = "cpu") -> FitResult:
    """M fitted as ``fits[variant]`` says (``fits`` from :func:`fit_configs`) to base model
    ``base``'s activations on its training images, with the held-out R² per epoch; the ``exact``
    variant starts from the ``warm_start`` fit. Fitted on ``device``, single-threaded on the CPU as
    every training here (:func:`training_threads`); cached by the base model's and the fit's configs
    (and a GPU's device type, :func:`trained_on`)."""
    key = fit_key(base, fits, variant, device)

    def compute() -> dict:
        net = base_model(base, device)[0]
        train_acts = orbit_activations(net, training_set(base).images, device=device)
        test_acts = orbit_activations(net, heldout_set(base).images, device=device)
        m_init = fit(base, fits, "warm_start", device).m if variant == "exact" else None
        with training_threads(device):
            result = fit_m(*train_acts, fits[variant], eval_data=test_acts, m_init=m_init, device=device)
        return {"m": result.m, "history": result.history}

    data = cache.cached_torch("fitted_m", key, compute)
    return FitResult(data["m"], data["history"])


def _fit_job(base: TrainConfig, fits: Mapping[str, FitConfig], variants: tuple[str, ...]) -> None:
    for variant in variants:
        fit(base, fits, variant)


def prefetch_fits(wanted: Sequence[tuple[TrainConfig, Mapping[str, FitConfig], str]], jobs: int = 0,
                  device: torch.device | str = "cpu") -> int:
    """Fit the Ms of ``wanted`` (``(base, fits, variant)`` triples, as :func:`fit` takes them) the
    cache lacks side by side, one fit per worker process (:func:`esae.runtime.run_jobs`: ``jobs``
    workers, 0 one per CPU core), as :func:`prefetch_base_models` does for base models; an ``exact``
    fit shares its worker with the ``warm_start`` fit it starts from, and the longest fits go first.
    Nothing happens on a GPU, for fewer than two missing fits, or when the cache is read-only.
    Returns how many fits were computed here."""
    todo: dict[tuple, list[str]] = {}
    for base, fits, variant in wanted:
        if cache.is_cached("fitted_m", fit_key(base, fits, variant, device)):
            continue
        group = "warm_start" if variant in ("warm_start", "exact") else variant
        chain = todo.setdefault((base, tuple(sorted(fits.items(), key=lambda kv: kv[0])), group), [])
        chain.extend(v for v in (("warm_start", "exact") if variant == "exact" else (variant,))
                     if v not in chain and not cache.is_cached("fitted_m", fit_key(base, fits, v, device)))
    calls = [(sum(dict(fits)[v].epochs for v in chain), partial(_fit_job, base, dict(fits), tuple(chain)))
             for (base, fits, _), chain in todo.items()]
    calls.sort(key=lambda c: -c[0])
    if not _run_missing([call for _, call in calls], lambda call: call, jobs, device, "fits of M"):
        return 0
    return sum(len(call.args[2]) for _, call in calls)


def fitted_m(base: TrainConfig, fits: Mapping[str, FitConfig], device: torch.device | str = "cpu") -> Tensor:
    """The M ``(256, 256)`` chapter 5 uses for base model ``base``: the ``warm_start`` fit (Adam on
    the paper's loss from the least-squares start; chapter 4)."""
    return fit(base, fits, "warm_start", device).m


# --------------------------------------------------------------------------------------------
# SAEs (chapter 5)


def _digest(*tensors: Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def _model_digest(model: nn.Module) -> str:
    return _digest(*[v for _, v in sorted(model.state_dict().items())])


@dataclass
class SAEContext:
    """What one base model's SAEs train on: the model, its training images (activations
    computed once, lazily) and the part of every SAE's cache key they fix."""

    net: nn.Module
    dataset: ShapesDataset
    model: str
    device: torch.device
    key: dict[str, Any]
    _acts: Tensor | None = None

    def acts(self, canonical: str) -> Tensor:
        """Training orbit activations ``(n, 4, d)``, entry ``[i, 0]`` the invariant SAE's target."""
        from esae.sae_training import canonical_orbit, orbit_acts, target_rotation

        if self._acts is None:
            self._acts = orbit_acts(self.net, self.dataset.images, device=self.device)
        return canonical_orbit(self._acts, target_rotation(self.dataset, canonical))


def sae_context(base: TrainConfig, device: torch.device | str = "cpu") -> SAEContext:
    """The :class:`SAEContext` of base model ``base`` (a cache hit after chapter 3)."""
    device = torch.device(device)
    net = base_model(base, device)[0]
    dataset = training_set(base)
    rotations = torch.as_tensor(dataset.rotations if dataset.rotations is not None else np.zeros(0, np.int64))
    key = {"model": base.kind, "base_model": _model_digest(net), "version": SAE_CACHE_VERSION, "layout": base.layout,
           "images": _digest(dataset.images, torch.as_tensor(dataset.shapes), torch.as_tensor(dataset.orientations),
                             rotations), **trained_on(device)}
    return SAEContext(net, dataset, base.kind, device, key)


def _sae_key(ctx: SAEContext, config: SAETrainConfig) -> dict[str, Any]:
    return {**ctx.key, "sae": config}


def _trained(ctx: SAEContext, config: SAETrainConfig,
             together: dict[SAETrainConfig, TrainResult] | None = None) -> TrainResult:
    from esae.sae_training import TrainResult, train_sae
    from esae.saes import load_sae

    result: list[TrainResult] = []

    def compute(tmp: Path) -> None:
        if together and config in together:
            trained = together.pop(config)
        else:
            acts = ctx.acts(config.canonical)
            with training_threads(ctx.device):
                trained = train_sae(config, acts, ctx.device, desc=f"{ctx.model} {config.name} k={config.k}")
        trained.sae.save_model(str(tmp / "sae"))
        (tmp / "history.json").write_text(json.dumps(trained.history))
        result.append(trained)

    entry = cache.cached_dir("sae", _sae_key(ctx, config), compute)
    if result:
        return result[0]
    return TrainResult(load_sae(entry / "sae", ctx.device), json.loads((entry / "history.json").read_text()))


def _train_missing_together(ctx: SAEContext, configs: list[SAETrainConfig]) -> dict[SAETrainConfig, TrainResult]:
    """The SAEs of ``configs`` not yet cached, trained together on one stream
    (:func:`esae.sae_stack.train_stacked`; equal to separate runs up to float round-off)."""
    from esae.sae_stack import train_stacked

    missing = [c for c in configs if not cache.is_cached("sae", _sae_key(ctx, c))]
    if missing and cache.is_read_only():  # training here bypasses cached_dir: honour read_only the same way
        raise cache.NotCached("sae", cache.entry_path("sae", _sae_key(ctx, missing[0])))
    out: dict[SAETrainConfig, TrainResult] = {}
    for shared in dict.fromkeys((c.seed, c.batch_size, c.canonical) for c in missing):
        group = [c for c in missing if (c.seed, c.batch_size, c.canonical) == shared]
        acts = ctx.acts(group[0].canonical)
        with training_threads(ctx.device):
            out.update(zip(group, train_stacked(group, acts, ctx.device, desc=f"{ctx.model}: {len(group)} SAEs together")))
    return out


def _equivariant(ctx: SAEContext, config: SAETrainConfig, m: Tensor) -> SAE:
    from esae.saes import EquivariantTopKSAE, load_sae

    invariant = _trained(ctx, config).sae

    def compute(tmp: Path) -> None:
        EquivariantTopKSAE.from_invariant(invariant, m.to(invariant.W_dec.device)).save_model(str(tmp / "sae"))

    entry = cache.cached_dir("sae_equivariant", {**ctx.key, "sae": config, "m": _digest(m)}, compute)
    return load_sae(entry / "sae", ctx.device)


def sae(base: autoencoders.TrainConfig, config: SAETrainConfig, device: torch.device | str = "cpu") -> TrainResult:
    """One SAE trained as ``config`` says on base model ``base``'s activations of its training
    images, cached like :func:`saes`'s (e.g. a variant a chapter compares)."""
    return _trained(sae_context(base, device), config)


def _trained_all(ctx: SAEContext, configs: Mapping[tuple[str, int], SAETrainConfig]) -> dict[tuple[str, int], TrainResult]:
    together = _train_missing_together(ctx, list(configs.values()))
    return {key: _trained(ctx, cfg, together) for key, cfg in configs.items()}


def saes(base: autoencoders.TrainConfig, configs: Mapping[tuple[str, int], SAETrainConfig], fits: Mapping[str, FitConfig],
         device: torch.device | str = "cpu") -> dict[tuple[str, int], TrainResult]:
    """Every SAE of ``configs`` (:func:`sae_configs`) for base model ``base``, with its training
    history, keyed by ``(name, k)``; the missing ones trained together, all cached (keyed by the
    training config, the base model's weights and the training images). Each invariant SAE also
    gives an equivariant one, ``("equivariant", k)``, with chapter 4's M (:func:`fitted_m` of
    ``fits``), carrying the invariant SAE's history."""
    from esae.sae_training import TrainResult
    from esae.saes import SAE_NAMES

    ctx = sae_context(base, device)
    out = _trained_all(ctx, configs)
    m = fitted_m(base, fits, ctx.device).detach().cpu()
    for (name, k), cfg in configs.items():
        if name == "invariant":
            out[("equivariant", k)] = TrainResult(_equivariant(ctx, cfg, m), out[(name, k)].history)
    return {key: out[key] for key in sorted(out, key=lambda nk: (nk[1], SAE_NAMES.index(nk[0])))}


def load_saes(base: autoencoders.TrainConfig, configs: Mapping[tuple[str, int], SAETrainConfig], fits: Mapping[str, FitConfig],
              device: torch.device | str = "cpu") -> dict[tuple[str, int], SAE]:
    """The SAEs of :func:`saes` alone, keyed by ``(name, k)`` with name in regular, wide, two_layer,
    invariant, equivariant (eval mode, on ``device``). Each exposes ``encode (n, 256) -> (n, F)``,
    ``decode (n, F) -> (n, 256)`` and ``W_dec (F, 256)``; the equivariant ones also ``m (256, 256)``
    and ``reconstruct(x, p)`` (``p``: the input's rotation from its orbit's canonical image,
    :func:`esae.sae_training.target_rotation`)."""
    return {key: result.sae for key, result in saes(base, configs, fits, device).items()}


# --------------------------------------------------------------------------------------------
# training in parallel (chapters 3, 5 and 7; chapter 4's fits above, chapter 6b's seeds below)


def prefetch_base_models(configs: Sequence[autoencoders.TrainConfig], jobs: int = 0, device: torch.device | str = "cpu") -> int:
    """Train the base models of ``configs`` the cache lacks in parallel worker processes
    (:func:`esae.runtime.run_jobs`: ``jobs`` workers, 0 one per CPU core), each single-threaded as
    every training here is (:func:`training_threads`), so the cache ends up as :func:`base_model`
    called one after another would leave it, only sooner. Nothing happens on a GPU, for fewer
    than two missing models, or when the cache is read-only: :func:`base_model` then trains (or
    reports) each one where it is asked for. Returns how many were trained here."""
    missing = [c for c in dict.fromkeys(configs) if not cache.is_cached("base_model", base_model_key(c, device))]
    return _run_missing(missing, lambda c: partial(base_model, c), jobs, device, "base models")


def _run_missing(missing: list, make_call: Callable[[Any], Callable[[], Any]], jobs: int, device: torch.device | str,
                 desc: str) -> int:
    """The prefetches' common part: ``make_call(m)`` for each of ``missing`` in worker processes
    (:func:`esae.runtime.run_jobs`, :func:`esae.runtime.job_workers`' count), unless none are
    wanted (a GPU, fewer than two calls or workers) or the cache is read-only; how many ran."""
    workers = job_workers(jobs, len(missing), device)
    if not workers or cache.is_read_only():
        return 0
    run_jobs([make_call(m) for m in missing], workers, desc=desc)
    return len(missing)


def _saes_cached(base: TrainConfig, configs: Mapping[tuple[str, int], SAETrainConfig],
                 device: torch.device | str = "cpu") -> bool:
    if not cache.is_cached("base_model", base_model_key(base, device)):
        return False
    ctx = sae_context(base, device)
    return all(cache.is_cached("sae", _sae_key(ctx, c)) for c in configs.values())


def _train_set(base: TrainConfig, configs: Mapping[tuple[str, int], SAETrainConfig]) -> None:
    _trained_all(sae_context(base), configs)


def prefetch_saes(sets: Sequence[tuple[autoencoders.TrainConfig, Mapping[tuple[str, int], SAETrainConfig]]], jobs: int = 0,
                  device: torch.device | str = "cpu") -> int:
    """Train the SAE sets the cache lacks — each ``(base, configs)`` as :func:`saes` would (its
    base model too, if missing; the missing SAEs of a set together,
    :func:`esae.sae_stack.train_stacked`) — one set per worker process, as
    :func:`prefetch_base_models` does for base models. The equivariant SAEs (M attached to a
    trained invariant one) are left to :func:`saes`. Returns how many sets were trained here."""
    if not job_workers(jobs, len(sets), device):  # none would run (a GPU, one set): skip the per-set check,
        return 0                                   # which loads each base model and digests its images
    missing = [(b, c) for b, c in sets if not _saes_cached(b, c, device)]
    return _run_missing(missing, lambda bc: partial(_train_set, bc[0], dict(bc[1])), jobs, device, "SAE sets")


# --------------------------------------------------------------------------------------------
# probe scores (chapter 6)


def probe_scores(*args: Any, **kwargs: Any):
    """:func:`esae.probing.probe_scores`, each probe's scores kept in the cache."""
    from esae import probing

    return probing.probe_scores(*args, store=cache, **kwargs)


def probe_panel(inputs, panel, config) -> dict:
    """:func:`esae.sae_probing.probe_panel`, each probe's scores kept in the cache."""
    from esae import sae_probing

    return sae_probing.probe_panel(inputs, panel, config, store=cache)


# --------------------------------------------------------------------------------------------
# language models and their SAEs (chapter 7)


def language_model(name: str, device: torch.device | str = "cpu", seed: int = 0):
    """:func:`esae.language_models.load_model`, Gemma 3 270M's converted checkpoint kept in the cache."""
    from esae import language_models

    return language_models.load_model(name, device, seed, store=cache)


def residual_activations(cfg, model, tokenizer, n_loss_windows: int = 0):
    """:func:`esae.language_models.residual_activations`, kept in the cache by ``cfg``."""
    from esae import language_models

    return language_models.residual_activations(cfg, model, tokenizer, n_loss_windows, store=cache)


def _layer_threads(device: torch.device | str) -> int | None:
    """The thread count of a layer SAE's training: :data:`TRAIN_THREADS` on the CPU, as every
    training here (:func:`training_threads`), so a worker and this process train the same SAE."""
    return TRAIN_THREADS if torch.device(device).type == "cpu" else None


def layer_sae(cfg, train_cfg, layer: int, acts, device: torch.device | str = "cpu"):
    """:func:`esae.language_models.layer_sae`, trained single-threaded on the CPU and kept in the
    cache by ``(cfg, train_cfg, layer, threads)``."""
    from esae import language_models

    return language_models.layer_sae(cfg, train_cfg, layer, acts, device, store=cache, threads=_layer_threads(device))


def _layer_sae_job(cfg, train_cfg, layer: int, data: Tensor) -> None:
    from esae import language_models

    language_models.train_layer_sae(cfg, train_cfg, layer, data, store=cache, threads=TRAIN_THREADS)


def prefetch_layer_saes(cfg, train_cfg, layers: Sequence[int], acts, jobs: int = 0,
                        device: torch.device | str = "cpu") -> int:
    """Train the layer SAEs of ``layers`` the cache lacks side by side, one layer per worker process
    (:func:`esae.runtime.run_jobs`: ``jobs`` workers, 0 one per CPU core), each worker handed only its
    layer's training activations; :func:`layer_sae` then loads them. The same SAEs as training them
    here one after another (single-threaded either way; the tests compare the weights), sooner: a
    second process trains another SAE faster than a second thread speeds up one
    (``benchmarks/bench_jobs.py``). Nothing happens on a GPU, for fewer than two missing layers, or
    when the cache is read-only. Returns how many were trained here."""
    from esae import language_models

    missing = [t for t in dict.fromkeys(layers)
               if not cache.is_cached("layer_sae", language_models.layer_sae_key(cfg, train_cfg, t, _layer_threads(device)))]
    return _run_missing(missing, lambda t: partial(_layer_sae_job, cfg, train_cfg, t, acts.train[t].clone()), jobs,
                        device, "layer SAEs")


def synthetic_layers(cfg, device: torch.device | str = "cpu"):
    """:func:`esae.match_ground_truth.synthetic_layers`, the SAEs kept in the cache by ``cfg``."""
    from esae import match_ground_truth

    return match_ground_truth.synthetic_layers(cfg, device, store=cache)


def match_stack(saes_, layers, cache_key=None, **kwargs: Any):
    """:func:`esae.match_evaluation.match_stack`, each pair's matches kept in the cache under ``cache_key``."""
    from esae import match_evaluation

    return match_evaluation.match_stack(saes_, layers, cache_key, store=cache, **kwargs)


# --------------------------------------------------------------------------------------------
# chapter 6b


BEYOND_VERSION = 6  # bump when a chapter-6b seed's computation changes (5: the stacked trainer's row gradients; 6: single-threaded)


def seed_result(kind: str, key: Mapping[str, Any], compute: Callable[[], Any]) -> Any:
    """One seed's numbers of a chapter-6b comparison (plain JSON from ``compute()``), cached by
    ``key`` (everything that made them: the configs and the seed)."""
    return cache.cached_json(kind, dict(key), compute)


def _readings_kind(kind: str, readings: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    """The paper's reading alone keeps the cache entries chapter 6b has always written; others get
    their own entries (``<kind>_fair``, keyed also by the readings)."""
    return (kind, {}) if readings == ("paper",) else (f"{kind}_fair", {"readings": list(readings)})


def _comparison_key(config) -> dict[str, Any]:
    """A :class:`esae.beyond.ComparisonConfig` as a cache key: every field but ``n_jobs`` (how many
    processes fit the probes does not change a score: each fit is single-threaded)."""
    return {f: v for f, v in asdict(config).items() if f != "n_jobs"}


def _beyond_shapes_entry(train_config: TrainConfig, config, *, jitter: float, task_indices, n_probe_train: int,
                         n_probe_test: int, readings=("paper",), device: torch.device | str = "cpu") -> tuple[str, dict]:
    kind, extra = _readings_kind("beyond_shapes", tuple(readings))
    return kind, {"version": BEYOND_VERSION, "threads": TRAIN_THREADS, "jitter": jitter, "train": train_config,
                  "config": _comparison_key(config), "tasks": [int(i) for i in task_indices],
                  "probe_sizes": [n_probe_train, n_probe_test], **extra, **trained_on(device)}


def _beyond_digits_entry(classifier_config, config, *, tasks, readings=("paper",),
                         device: torch.device | str = "cpu") -> tuple[str, dict]:
    kind, extra = _readings_kind("beyond_digits", tuple(readings))
    return kind, {"version": BEYOND_VERSION, "threads": TRAIN_THREADS, "classifier": classifier_config,
                  "config": _comparison_key(config), "tasks": [t.name for t in tasks], **extra, **trained_on(device)}


def beyond_shapes_seed(train_config: TrainConfig, config, *, jitter: float, task_indices, n_probe_train: int,
                       n_probe_test: int, readings=("paper",), device: torch.device | str = "cpu") -> dict[str, Any]:
    """:func:`esae.beyond.shapes_seed` (one seed of chapters 3–6 on jittered shapes), its plain
    numbers cached by everything that made them; computed single-threaded on the CPU
    (:func:`training_threads`: the same numbers here or in a worker of :func:`prefetch_beyond_seeds`),
    or on ``device`` under a key of its own (:func:`trained_on`)."""
    from esae import beyond

    kind, key = _beyond_shapes_entry(train_config, config, jitter=jitter, task_indices=task_indices,
                                     n_probe_train=n_probe_train, n_probe_test=n_probe_test, readings=readings,
                                     device=device)

    def compute() -> dict[str, Any]:
        with training_threads(device):
            return beyond.shapes_seed(train_config, config, jitter=jitter, task_indices=task_indices,
                                      n_probe_train=n_probe_train, n_probe_test=n_probe_test,
                                      readings=tuple(readings), device=device)

    return seed_result(kind, key, compute)


def beyond_digits_seed(classifier_config, config, *, tasks, readings=("paper",),
                       device: torch.device | str = "cpu") -> dict[str, Any]:
    """:func:`esae.beyond.digits_seed` (one seed of chapters 4–6 on the digit classifier), its plain
    numbers cached by everything that made them; computed single-threaded on the CPU, as
    :func:`beyond_shapes_seed`."""
    from esae import beyond

    kind, key = _beyond_digits_entry(classifier_config, config, tasks=tasks, readings=readings, device=device)

    def compute() -> dict[str, Any]:
        with training_threads(device):
            return beyond.digits_seed(classifier_config, config, tasks=tasks, readings=tuple(readings), device=device)

    return seed_result(kind, key, compute)


_BEYOND_ENTRIES = {beyond_shapes_seed: _beyond_shapes_entry, beyond_digits_seed: _beyond_digits_entry}


def _probes_in_turn(call: partial) -> partial:
    """``call`` with its comparison config's probes fitted one after another (``n_jobs`` 1): inside
    a worker process, whose sibling workers already use the other cores."""
    args, kwargs = list(call.args), dict(call.keywords)
    if "config" in kwargs:
        kwargs["config"] = replace(kwargs["config"], n_jobs=1)
    else:
        args[1] = replace(args[1], n_jobs=1)
    return partial(call.func, *args, **kwargs)


def prefetch_beyond_seeds(calls: Sequence[partial], jobs: int = 0, device: torch.device | str = "cpu") -> int:
    """Compute the chapter-6b seeds of ``calls`` the cache lacks side by side, one seed per worker
    process (:func:`esae.runtime.run_jobs`: ``jobs`` workers, 0 one per CPU core), as
    :func:`prefetch_base_models` does for base models: each seed is independent (its own data, base
    model, M, SAEs and probes), runs single-threaded and fits its probes one after another, so two
    workers keep both cores of a laptop busy through the small training steps that one process with
    two threads cannot. ``calls`` are ``functools.partial`` of :func:`beyond_shapes_seed` or
    :func:`beyond_digits_seed`, as the chapter then makes them (it finds the results in the cache);
    put the longest first. Nothing happens on a GPU, for fewer than two missing seeds, or when the
    cache is read-only. Returns how many seeds were computed here."""
    missing = []
    for call in calls:
        entry = _BEYOND_ENTRIES.get(getattr(call, "func", None))
        if entry is None:
            raise ValueError("each of calls must be a functools.partial of esae.pipeline.beyond_shapes_seed or "
                             f"beyond_digits_seed, got {call!r}")
        kind, key = entry(*call.args, **call.keywords)
        if not cache.is_cached(kind, key):
            missing.append(call)
    return _run_missing(missing, _probes_in_turn, jobs, device, "seeds")
