"""JumpReLU SAEs in Gemma Scope's units, trained with sae-lens (chapter 7).

:func:`train_jumprelu` trains one JumpReLU SAE per layer with sae-lens's ``SAETrainer`` and
returns it parametrised as Gemma Scope's released SAEs are (θ and biases in the residual
stream's raw units, unit decoder rows: :func:`unit_decoder_rows`), so that SAE Match
(:mod:`esae.sae_match`) compares the same kind of weights the paper matched;
:func:`sae_quality` gives a trained SAE's L0, explained variance and dead features.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

from esae.checks import check_choice, check_float, check_int
from esae.sae_match import _check_jumprelu, build_jumprelu, rescale_features

Tensor = torch.Tensor


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
    norm, its norm moved into the encoder column, ``b_enc`` and θ (:func:`~esae.sae_match.rescale_features`).
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
