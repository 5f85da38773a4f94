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
    """Show images ``(n, H, W)``, ``(n, 1, H, W)`` or colour ``(n, 3, H, W)`` in a grid with optional titles."""
    arr = _np(images)
    if arr.ndim == 4:
        arr = arr.transpose(0, 2, 3, 1).clip(vmin, vmax) if arr.shape[1] == 3 else arr[:, 0]
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
        ax.set_title(title, fontsize=9)
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


def probing_differences(scores: Mapping[str, Mapping[int, Mapping[str, Mapping[str, float | None]]]],
                        reference: str = "regular", *, groups: Sequence[str] = ("S", "SO", "SP", "SPO", "all"),
                        title: str | None = None,
                        errors: Mapping[str, Mapping[int, Mapping[str, Mapping[str, float | None]]]] | None = None
                        ) -> Figure:
    """The comparison of :func:`probing_bars` made visible: each SAE's mean F1 minus the
    ``reference`` SAE's, per task group, one row per probed input and one column per K, on an axis
    scaled to the differences (shared by all panels) with a line at 0. ``scores`` as in
    :func:`probing_bars`; ``errors`` in the same shape (``errors[input][k][sae][group]``), when
    given, is the error bar of each difference (e.g. its standard deviation over seeds)."""
    inputs = list(scores)
    ks = sorted({k for by_k in scores.values() for k in by_k})
    saes = [s for s in dict.fromkeys(s for by_k in scores.values() for by_sae in by_k.values() for s in by_sae)
            if s != reference]
    fig, axes = plt.subplots(len(inputs), len(ks), figsize=(3.3 * len(ks) + 0.6, 2.4 * len(inputs) + 0.8),
                             squeeze=False, sharey=True)
    width = 0.8 / max(1, len(saes))
    x = np.arange(len(groups))
    lim = 0.0
    for r, inp in enumerate(inputs):
        for c, k in enumerate(ks):
            ax = axes[r, c]
            by_sae = scores[inp].get(k, {})
            ref = by_sae.get(reference, {})
            for i, name in enumerate(saes):
                vals = by_sae.get(name, {})
                diff = [np.nan if vals.get(g) is None or ref.get(g) is None else vals[g] - ref[g] for g in groups]
                err = None
                if errors is not None:
                    by_group = errors.get(inp, {}).get(k, {}).get(name, {})
                    err = [np.nan if by_group.get(g) is None else by_group[g] for g in groups]
                lim = max([lim] + [abs(d) + (0.0 if err is None or not np.isfinite(e) else e)
                                   for d, e in zip(diff, err or [0.0] * len(diff)) if np.isfinite(d)])
                ax.bar(x + (i - (len(saes) - 1) / 2) * width, diff, width, color=SAE_COLORS.get(name, f"C{i}"),
                       label=SAE_LABELS.get(name, name), edgecolor="white", lw=0.3, yerr=err,
                       error_kw={"elinewidth": 0.8, "capsize": 1.5, "ecolor": "0.2"})
            ax.axhline(0, color="0.3", lw=0.8)
            ax.set_xticks(x, groups)
            ax.grid(axis="y", color="0.9", lw=0.6)
            ax.set_axisbelow(True)
            ax.set_title(f"{inp}, K = {k}", fontsize=9)
            if c == 0:
                ax.set_ylabel(f"F1 − F1 of the {SAE_LABELS.get(reference, reference)} SAE", fontsize=8)
            if r == len(inputs) - 1:
                ax.set_xlabel("task group", fontsize=8)
    lim = 1.1 * lim if lim > 0 else 0.05
    axes[0, 0].set_ylim(-lim, lim)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(saes), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
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


def line_plot(x: Sequence, series: Mapping[str, Sequence[float]], *, xlabel: str, ylabel: str, title: str,
              logy: bool = False, errors: Mapping[str, Sequence[float]] | None = None, ax=None,
              markers: bool = True) -> Figure:
    """One line per entry of ``series`` against ``x`` (numbers or labels such as layer pairs
    ``"3-4"``), with optional ± error bars; log y-axis with ``logy`` (symmetric-log when a
    series has values ≤ 0)."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(7.5, 3.6))
    else:
        fig = ax.figure
    labels = [str(v) for v in x]
    pos = np.arange(len(labels)) if any(isinstance(v, str) for v in x) else np.asarray(x, dtype=float)
    for name, values in series.items():
        values = np.asarray(values, dtype=float)
        err = None if errors is None or name not in errors else np.asarray(errors[name], dtype=float)
        ax.errorbar(pos, values, yerr=err, marker="o" if markers else None, ms=3.5, lw=1.4, capsize=2, label=name)
    if logy:
        all_values = np.concatenate([np.asarray(v, dtype=float) for v in series.values()])
        ax.set_yscale("log" if (all_values > 0).all() else "symlog")
    if pos is not None and len(labels) and isinstance(x[0], str):
        step = max(1, len(labels) // 18)
        ax.set_xticks(pos[::step], labels[::step], rotation=45 if len(labels) > 8 else 0, fontsize=8)
    ax.set_xlabel(xlabel), ax.set_ylabel(ylabel), ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def norm_threshold_plot(layers: Sequence[int], norms: Sequence[float], thresholds: Sequence[float],
                        title: str = "Residual norm and mean JumpReLU threshold per layer") -> Figure:
    """The paper's Figure 1 (left): mean hidden-state norm ‖x‖ (left axis) and mean SAE
    threshold θ (right axis) per layer, both on log scales, to compare their growth."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    ax.plot(layers, norms, "o-", color="C0", ms=3.5, label="mean ‖x‖")
    ax.set_yscale("log"), ax.set_xlabel("layer (block output)"), ax.set_ylabel("mean ‖x‖ (residual units)", color="C0")
    ax2 = ax.twinx()
    ax2.plot(layers, thresholds, "s--", color="C3", ms=3.5, label="mean θ")
    ax2.set_yscale("log"), ax2.set_ylabel("mean threshold θ (residual units)", color="C3")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def frontier_plot(points: Mapping[str, Mapping[str, Sequence[tuple[int, float, float]]]],
                  reference: Mapping[str, float] | None = None, ylabel: str = "L1 norm of the latents",
                  xlabel: str = "spliced reconstruction MSE (per pixel)") -> Figure:
    """The sparsity/reconstruction frontier (the paper's Figure 4), one panel per base model:
    ``points[model][sae]`` is a list of ``(k, x, y)``; each SAE's points are joined in order of K,
    and a marker's size grows with K (no labels to collide where SAEs' points crowd together).
    ``reference[model]``, if given, is drawn as a vertical line (the base model's own
    reconstruction error)."""
    models = list(points)
    fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 4.2), squeeze=False)
    markers = "osD^v<>"
    ks = sorted({p[0] for per_model in points.values() for pts in per_model.values() for p in pts})
    size = {k: 18 + 70 * i / max(1, len(ks) - 1) for i, k in enumerate(ks)}
    for ax, model in zip(axes[0], models):
        for i, (sae, pts) in enumerate(points[model].items()):
            pts = sorted(pts)
            xs, ys = [p[1] for p in pts], [p[2] for p in pts]
            (line,) = ax.plot(xs, ys, marker=markers[i % len(markers)], markersize=5, label=sae)
            ax.scatter(xs, ys, s=[size[p[0]] for p in pts], marker=markers[i % len(markers)], color=line.get_color(),
                       alpha=0.45, zorder=3)
        ax.text(0.98, 0.02, "marker size: K = " + ", ".join(map(str, ks)), transform=ax.transAxes, ha="right",
                va="bottom", fontsize=7, color="0.3")
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
    return fig


def truncation_curves(scores: Mapping[str, Mapping[int, Mapping[str, float | None]]], *,
                      groups: Sequence[str] = ("S", "SO", "SP", "SPO"), title: str | None = None) -> Figure:
    """Probe F1 against the truncation length ``L``, one panel per task group, one line per input:
    ``scores[name][L]`` is ``{group: mean F1}`` (``name`` an SAE, or ``"activations"``)."""
    fig, axes = plt.subplots(1, len(groups), figsize=(2.6 * len(groups) + 0.4, 2.8), squeeze=False, sharey=True)
    for ax, g in zip(axes[0], groups):
        for i, (name, by_L) in enumerate(scores.items()):
            Ls = sorted(by_L)
            vals = [np.nan if by_L[L].get(g) is None else by_L[L][g] for L in Ls]
            ax.plot(Ls, vals, marker="o", ms=3.5, color=SAE_COLORS.get(name, f"C{i}"),
                    label=SAE_LABELS.get(name, name), ls="--" if name == "activations" else "-")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({L for by_L in scores.values() for L in by_L}))
        ax.get_xaxis().set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_ylim(0, 1.02)
        ax.grid(color="0.9", lw=0.6)
        ax.set_title(g, fontsize=9)
        ax.set_xlabel("truncation length L (latents kept)", fontsize=8)
    axes[0, 0].set_ylabel("mean F1 on the test split", fontsize=8)
    axes[0, -1].legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
