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


SAE_COLORS = {"regular": "#4c72b0", "wide": "#dd8452", "two_layer": "#55a868", "invariant": "#8172b3",
              "equivariant": "#c44e52", "activations": "0.55"}
SAE_LABELS = {"regular": "regular", "wide": "wide (|G|× latents)", "two_layer": "two-layer encoder",
              "invariant": "invariant", "equivariant": "equivariant", "activations": "base activations"}


def probing_bars(scores: Mapping[str, Mapping[int, Mapping[str, Mapping[str, float | None]]]],
                 baseline: Mapping[str, float | None] | None = None, *,
                 groups: Sequence[str] = ("S", "SO", "SP", "SPO", "all"), title: str | None = None,
                 ylabel: str = "mean F1 on the test split") -> Figure:
    """Probing performance as in the paper's Figures 3 and 7: one row per probed input
    (``latents``, ``reconstructions``), one column per TopK value; in each panel, grouped bars per
    task group, one bar per SAE and a grey bar for the base activations (the upper bound,
    repeated in every panel).

    ``scores[input][k][sae]`` is ``{group: mean F1}`` (``None`` is drawn as a missing bar);
    ``baseline`` the same for the base activations.
    """
    inputs = list(scores)
    ks = sorted({k for by_k in scores.values() for k in by_k})
    saes = list(dict.fromkeys(s for by_k in scores.values() for by_sae in by_k.values() for s in by_sae))
    bars = saes + (["activations"] if baseline is not None else [])
    fig, axes = plt.subplots(len(inputs), len(ks), figsize=(3.3 * len(ks) + 0.6, 2.6 * len(inputs) + 0.8),
                             squeeze=False, sharey=True)
    width = 0.8 / len(bars)
    x = np.arange(len(groups))
    for r, inp in enumerate(inputs):
        for c, k in enumerate(ks):
            ax = axes[r, c]
            by_sae = scores[inp].get(k, {})
            for i, name in enumerate(bars):
                vals = baseline if name == "activations" else by_sae.get(name, {})
                heights = [np.nan if vals.get(g) is None else vals[g] for g in groups]
                ax.bar(x + (i - (len(bars) - 1) / 2) * width, heights, width,
                       color=SAE_COLORS.get(name, f"C{i}"), label=SAE_LABELS.get(name, name),
                       hatch="//" if name == "activations" else None, edgecolor="white", lw=0.3)
            ax.set_xticks(x, groups)
            ax.set_ylim(0, 1)
            ax.grid(axis="y", color="0.9", lw=0.6)
            ax.set_axisbelow(True)
            ax.set_title(f"{inp}, K = {k}", fontsize=9)
            if c == 0:
                ax.set_ylabel(ylabel, fontsize=8)
            if r == len(inputs) - 1:
                ax.set_xlabel("task group", fontsize=8)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    ncol = len(bars) if len(ks) > 1 else 3
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.05 if ncol == len(bars) else 0.09, 1, 1))
    return fig


def probe_comparison(scores: Mapping[str, Mapping[str, float | None]], *,
                     groups: Sequence[str] = ("S", "SO", "SP", "SPO", "all"), title: str | None = None,
                     ax=None) -> Figure:
    """Mean F1 per task group for each probe (kNN, logistic regression, XGBoost, best per task):
    ``scores[probe]`` is ``{group: mean F1}``."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.0, 3.0))
    else:
        fig = ax.figure
    names = list(scores)
    width = 0.8 / len(names)
    x = np.arange(len(groups))
    for i, name in enumerate(names):
        heights = [np.nan if scores[name].get(g) is None else scores[name][g] for g in groups]
        ax.bar(x + (i - (len(names) - 1) / 2) * width, heights, width, label=name, color=f"C{i}")
    ax.set_xticks(x, groups)
    ax.set_ylim(0, 1)
    ax.set_xlabel("task group")
    ax.set_ylabel("mean F1 on the test split")
    ax.grid(axis="y", color="0.9", lw=0.6)
    ax.set_axisbelow(True)
    ax.legend(fontsize=8, ncol=len(names), loc="upper right")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
