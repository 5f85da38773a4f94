"""Figures, one function per kind of figure; each returns the matplotlib Figure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def image_grid(images, titles: Sequence[str] | None = None, ncols: int = 8, size: float = 1.4,
               cmap: str = "gray_r", vmin: float = 0.0, vmax: float = 1.0, suptitle: str | None = None) -> Figure:
    """Show images ``(n, H, W)`` or ``(n, 1, H, W)`` in a grid with optional titles."""
    arr = _np(images)
    if arr.ndim == 4:
        arr = arr[:, 0]
    n = len(arr)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.3 if titles else 0)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([]), ax.set_yticks([])
        if i >= n:
            ax.axis("off")
            continue
        ax.imshow(arr[i], cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def eigenvalues_plot(eigenvalues: Mapping[str, object], order: int = 4, ax=None) -> Figure:
    """Eigenvalues of one or more matrices in the complex plane, with the unit circle and the
    ``order``-th roots of unity (the only eigenvalues an exact representation of C_order has)."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.2, 4.2))
    else:
        fig = ax.figure
    t = np.linspace(0, 2 * np.pi, 400)
    ax.plot(np.cos(t), np.sin(t), color="0.8", lw=1, zorder=0)
    roots = np.exp(2j * np.pi * np.arange(order) / order)
    ax.scatter(roots.real, roots.imag, s=160, facecolors="none", edgecolors="k", lw=1.5,
               label=f"{order}th roots of unity", zorder=3)
    for name, eig in eigenvalues.items():
        e = _np(eig).astype(complex)
        ax.scatter(e.real, e.imag, s=10, alpha=0.6, label=name, zorder=2)
    ax.axhline(0, color="0.9", lw=0.8, zorder=-1), ax.axvline(0, color="0.9", lw=0.8, zorder=-1)
    ax.set_aspect("equal")
    ax.set_xlabel("real part"), ax.set_ylabel("imaginary part")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig
