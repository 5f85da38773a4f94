"""Figures, one function per kind of figure; each returns the matplotlib Figure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter


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


def frontier_plot(points: Mapping[str, Mapping[str, Sequence[tuple[int, float, float]]]],
                  reference: Mapping[str, float] | None = None, ylabel: str = "L1 norm of the latents",
                  xlabel: str = "spliced reconstruction MSE (per pixel)") -> Figure:
    """The sparsity/reconstruction frontier (the paper's Figure 4), one panel per base model:
    ``points[model][sae]`` is a list of ``(k, x, y)``; each SAE's points are joined in order of K
    and labelled with K. ``reference[model]``, if given, is drawn as a vertical line (the base
    model's own reconstruction error)."""
    models = list(points)
    fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 4.2), squeeze=False)
    markers = "osD^v<>"
    for ax, model in zip(axes[0], models):
        for i, (sae, pts) in enumerate(points[model].items()):
            pts = sorted(pts)
            xs, ys = [p[1] for p in pts], [p[2] for p in pts]
            ax.plot(xs, ys, marker=markers[i % len(markers)], label=sae)
            for k, x, y in pts:
                ax.annotate(f"{k}", (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
        if reference and model in reference:
            ax.axvline(reference[model], color="0.5", ls="--", lw=1, label="base model (no SAE)")
        xs_all = [p[1] for pts in points[model].values() for p in pts if p[1] and p[1] > 0]
        if xs_all and max(xs_all) / min(xs_all) > 10:  # a log axis only when the errors span decades
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(model.upper())
        ax.set_xlabel(xlabel), ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def score_histogram(scores: Mapping[str, object], threshold: float | None = None, bins: int = 40,
                    xlabel: str = "score", xlim: tuple[float, float] | None = (-1.0, 1.0)) -> Figure:
    """Overlaid histograms of one score per item (e.g. one per SAE feature), one per entry of
    ``scores``, with an optional vertical ``threshold`` line."""
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    edges = np.linspace(*(xlim or (min(_np(s).min() for s in scores.values()),
                                   max(_np(s).max() for s in scores.values()))), bins + 1)
    for name, s in scores.items():
        ax.hist(_np(s), bins=edges, alpha=0.55, label=name)
    if threshold is not None:
        ax.axvline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax.set_xlabel(xlabel), ax.set_ylabel("number of features")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def curves_plot(curves: Mapping[str, Mapping[str, Sequence[float]]], xlabel: str = "step",
                ylabel: str = "loss", logy: bool = True, smooth: int = 1) -> Figure:
    """Line curves in panels: ``curves[panel][label]`` is a sequence of values (e.g. the training
    loss per step); ``smooth`` > 1 averages over that many consecutive values."""
    panels = list(curves)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for label, values in curves[panel].items():
            v = _np(values).astype(float)
            if smooth > 1 and len(v) >= smooth:
                v = np.convolve(v, np.ones(smooth) / smooth, mode="valid")
            ax.plot(np.arange(len(v)) + (smooth - 1 if smooth > 1 else 0), v, label=label, lw=1)
        if logy:
            ax.set_yscale("log")
        ax.set_title(panel), ax.set_xlabel(xlabel), ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def feature_grid(examples, features, row_labels: Sequence[str], col_labels: Sequence[str],
                 size: float = 1.35, suptitle: str | None = None) -> Figure:
    """Features as pictures, one row per feature: its top-activating input image ``examples[i]``
    ``(H, W)`` (grey, in [0, 1]) followed by what the feature draws in each orientation,
    ``features[i, p]`` ``(H, W)`` (diverging colours, red adds ink, blue removes it; one colour
    scale per row). ``col_labels`` name the ``1 + n_orientations`` columns."""
    ex, ft = _np(examples), _np(features)
    if ex.ndim == 4:
        ex = ex[:, 0]
    if ft.ndim == 5:
        ft = ft[:, :, 0]
    rows, cols = ft.shape[0], ft.shape[1] + 1
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols + 1.2, size * rows + 0.4), squeeze=False)
    for i in range(rows):
        vmax = float(np.abs(ft[i]).max()) or 1.0
        axes[i, 0].imshow(ex[i], cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        for p in range(ft.shape[1]):
            axes[i, p + 1].imshow(ft[i, p], cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
        axes[i, 0].set_ylabel(row_labels[i], fontsize=8, rotation=0, ha="right", va="center")
        for ax in axes[i]:
            ax.set_xticks([]), ax.set_yticks([])
    for j, label in enumerate(col_labels):
        axes[0, j].set_title(label, fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig
