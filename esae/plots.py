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


def shape_table(sprites, names: Sequence[str], counts: Sequence[int], size: float = 1.0,
                cmap: str = "gray_r") -> Figure:
    """The paper's Figure 6: one row per shape, one column per 90° rotation of its canonical
    sprite; rotations that repeat an earlier orientation are greyed out. ``sprites``
    ``(n_shapes, 4, h, w)``, ``counts[s]`` = distinct orientations of shape ``s``."""
    arr = _np(sprites)
    n = len(arr)
    fig, axes = plt.subplots(n, 4, figsize=(size * 4 + 1.4, size * n + 0.4), squeeze=False)
    for s in range(n):
        for k in range(4):
            ax = axes[s, k]
            ax.set_xticks([]), ax.set_yticks([])
            repeat = k >= counts[s]
            ax.imshow(arr[s, k], cmap=cmap, vmin=0, vmax=1, alpha=0.25 if repeat else 1.0, interpolation="nearest")
            if s == 0:
                ax.set_title(f"rotated {90 * k}°", fontsize=8)
            if k == 0:
                ax.set_ylabel(f"{names[s]}\n({counts[s]} orient.)", fontsize=8, rotation=0, ha="right", va="center")
            if repeat:
                ax.text(0.5, 0.5, f"= o{k % counts[s]}", transform=ax.transAxes, ha="center", va="center", fontsize=8)
            else:
                ax.text(0.03, 0.97, f"o{k}", transform=ax.transAxes, ha="left", va="top", fontsize=6, color="C0")
    fig.tight_layout()
    return fig


def training_curves(histories: Mapping[str, Mapping[str, Sequence[float]]], smooth: int = 25) -> Figure:
    """Training curves of several models: the per-batch training MSE (a running mean over
    ``smooth`` steps) against epochs, and the held-out MSE after each epoch; log scale."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for i, (name, h) in enumerate(histories.items()):
        steps = np.asarray(h["step_loss"], dtype=float)
        n_epochs = len(h["epoch_loss"])
        w = max(1, min(smooth, len(steps) // 4 or 1))
        run = np.convolve(steps, np.ones(w) / w, mode="valid")
        x = (np.arange(len(run)) + w) * n_epochs / len(steps)
        axes[0].plot(x, run, color=f"C{i}", label=name)
        axes[1].plot(np.arange(1, n_epochs + 1), h["heldout_mse"], "o-", ms=3, color=f"C{i}", label=name)
    axes[0].set_title(f"training loss (running mean of {smooth} batches)")
    axes[1].set_title("held-out reconstruction error")
    for ax in axes:
        ax.set_yscale("log"), ax.set_xlabel("epoch"), ax.set_ylabel("MSE per pixel"), ax.legend()
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


def reconstruction_grid(rows: Mapping[str, object], titles: Sequence[str] | None = None, size: float = 1.3,
                        cmap: str = "gray_r", suptitle: str | None = None) -> Figure:
    """Images in labelled rows (e.g. ``{"input": x, "MLP": mlp(x), "CNN": cnn(x)}``), each
    ``(n, 1, H, W)`` or ``(n, H, W)``; reconstructions are clipped to [0, 1] for display."""
    arrays = {k: np.clip(_np(v)[:, 0] if _np(v).ndim == 4 else _np(v), 0, 1) for k, v in rows.items()}
    ncols = len(next(iter(arrays.values())))
    fig, axes = plt.subplots(len(arrays), ncols, figsize=(size * ncols + 0.8, size * len(arrays) + 0.3),
                             squeeze=False)
    for r, (name, arr) in enumerate(arrays.items()):
        for c in range(ncols):
            ax = axes[r, c]
            ax.imshow(arr[c], cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=9)
            if r == 0 and titles is not None:
                ax.set_title(titles[c], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def similarity_histograms(similarities: Mapping[str, Mapping[str, object]], bins: int = 60,
                          xlabel: str = "cosine similarity") -> Figure:
    """One panel per model: overlaid histograms of similarities, e.g.
    ``{"MLP": {"ψ(x) vs ψ(gx)": sims, "random pairs": sims}}``."""
    fig, axes = plt.subplots(1, len(similarities), figsize=(4.3 * len(similarities), 3.2), squeeze=False)
    for ax, (model, groups) in zip(axes[0], similarities.items()):
        for i, (label, values) in enumerate(groups.items()):
            ax.hist(_np(values).ravel(), bins=bins, range=(-1, 1), alpha=0.55, density=True, color=f"C{i}",
                    label=label)
        ax.set_title(model), ax.set_xlabel(xlabel), ax.set_ylabel("density")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def labelled_quadrants(image, origins: Sequence[tuple[int, int]], texts: Sequence[str], cell: int,
                       title: str | None = None, size: float = 3.2, cmap: str = "gray_r") -> Figure:
    """One image ``(1, H, W)`` or ``(H, W)`` with the quadrant grid drawn and ``texts[p]`` written
    in the corner of the quadrant whose top-left pixel is ``origins[p]`` (row, column)."""
    arr = _np(image)
    arr = arr[0] if arr.ndim == 3 else arr
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(arr, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    for line in range(cell, arr.shape[0], cell):
        ax.axhline(line - 0.5, color="C1", lw=1, ls="--"), ax.axvline(line - 0.5, color="C1", lw=1, ls="--")
    for (r, c), text in zip(origins, texts):
        ax.text(c + 0.5, r + 0.5, text, color="C0", fontsize=8, ha="left", va="top",
                bbox=dict(facecolor="white", alpha=0.8, lw=0, pad=1))
    ax.set_xlabel("column (pixels)"), ax.set_ylabel("row (pixels)")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
