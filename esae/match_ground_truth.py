"""Ground truth for SAE Match: SAEs whose true correspondence is known (chapter 7).

Random JumpReLU SAEs (:func:`random_jumprelu`) and their permuted, rescaled and perturbed copies
(:func:`perturbed_copy`); the paper's Figure 2 scenario in raw units, features that grow with the
hidden states' norm (:func:`growing_norm_pair`); and SAEs trained with sae-lens on
``sae_lens.synthetic`` data whose true features drift across "layers" (:func:`synthetic_layers`).
:func:`recovery` scores a :class:`esae.sae_match.Match` against the truth;
:func:`copy_recovery` and :func:`synthetic_recovery` summarise the experiments chapter 7 shows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
from scipy.optimize import linear_sum_assignment

from esae.checks import check_float, check_int
from esae.jumprelu import TrainConfig, train_jumprelu
from esae.match_evaluation import pair_name
from esae.runtime import Store, store_or_none
from esae.sae_match import Match, _check_jumprelu, build_jumprelu, match, permute_features, rescale_features

Tensor = torch.Tensor


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
    (:func:`~esae.jumprelu.train_jumprelu`, seeded per layer) and identify which true feature each SAE feature
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
