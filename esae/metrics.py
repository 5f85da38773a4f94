"""Small statistics shared by several chapters."""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def r2_pooled(target: Tensor, pred: Tensor) -> float:
    """Coefficient of determination pooled over dimensions:
    ``1 − Σ‖y − ŷ‖² / Σ‖y − ȳ‖²`` with ``ȳ`` the per-dimension mean; ``target``, ``pred`` ``(n, d)``.
    Equals the fraction of the total variance explained (dimensions weighted by their variance)."""
    _check_pair(target, pred)
    resid = (target - pred).pow(2).sum()
    total = (target - target.mean(0, keepdim=True)).pow(2).sum()
    return float(1 - resid / total)


def r2_per_dim(target: Tensor, pred: Tensor, eps: float = 1e-12) -> float:
    """Coefficient of determination averaged over dimensions (scikit-learn's
    ``r2_score(..., multioutput='uniform_average')``); constant dimensions are skipped."""
    _check_pair(target, pred)
    resid = (target - pred).pow(2).sum(0)
    total = (target - target.mean(0, keepdim=True)).pow(2).sum(0)
    keep = total > eps
    return float((1 - resid[keep] / total[keep]).mean())


def r2_uncentred(target: Tensor, pred: Tensor) -> float:
    """``1 − Σ‖y − ŷ‖² / Σ‖y‖²``: variance around zero instead of around the mean."""
    _check_pair(target, pred)
    return float(1 - (target - pred).pow(2).sum() / target.pow(2).sum().clamp_min(1e-30))


def r2_per_sample(target: Tensor, pred: Tensor, eps: float = 1e-12) -> float:
    """R² of each sample across its dimensions (around the sample's own mean), averaged over samples."""
    _check_pair(target, pred)
    resid = (target - pred).pow(2).sum(1)
    total = (target - target.mean(1, keepdim=True)).pow(2).sum(1)
    keep = total > eps
    return float((1 - resid[keep] / total[keep]).mean())


def r2_variance_weighted(target: Tensor, pred: Tensor, eps: float = 1e-12) -> float:
    """Per-dimension R² averaged with weights proportional to each dimension's variance
    (scikit-learn's ``multioutput='variance_weighted'``); algebraically equal to :func:`r2_pooled`."""
    _check_pair(target, pred)
    resid = (target - pred).pow(2).sum(0)
    total = (target - target.mean(0, keepdim=True)).pow(2).sum(0)
    keep = total > eps
    w = total[keep] / total[keep].sum()
    return float((w * (1 - resid[keep] / total[keep])).sum())


def r2_squared_correlation(target: Tensor, pred: Tensor) -> float:
    """Squared Pearson correlation of all entries (flattened): scale- and offset-free."""
    _check_pair(target, pred)
    y, yh = target.flatten().double(), pred.flatten().double()
    y, yh = y - y.mean(), yh - yh.mean()
    return float((y @ yh) ** 2 / ((y @ y) * (yh @ yh)).clamp_min(1e-30))


R2_DEFINITIONS = {
    "pooled centred": r2_pooled,
    "per-dimension mean (r2_score)": r2_per_dim,
    "variance-weighted": r2_variance_weighted,
    "uncentred 1 − SSE/Σy²": r2_uncentred,
    "per-sample": r2_per_sample,
    "squared correlation": r2_squared_correlation,
}
"""Candidate definitions of R² for ``(target (n, d), pred (n, d))`` (chapter 4's table)."""


def _check_pair(target: Tensor, pred: Tensor) -> None:
    if target.shape != pred.shape or target.ndim != 2:
        raise ValueError(f"target and pred must both be (n, d) with equal shapes, got {tuple(target.shape)} "
                         f"and {tuple(pred.shape)}")
