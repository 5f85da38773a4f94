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


def _check_pair(target: Tensor, pred: Tensor) -> None:
    if target.shape != pred.shape or target.ndim != 2:
        raise ValueError(f"target and pred must both be (n, d) with equal shapes, got {tuple(target.shape)} "
                         f"and {tuple(pred.shape)}")
