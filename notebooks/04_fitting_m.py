# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Fitting M: one matrix explains how activations rotate
#
# Chapter 3 trained two autoencoders on the rotated-shapes images. Rotating an input image changes
# its 256-dimensional activations $\psi(x)$, but how? The paper's first result
# {cite}`erdogan2025equivariant` is that a **single matrix** $M$ explains it: fitted to minimise
#
# $$\mathcal{L}_M = \mathbb{E}_{x,\; p = 1..4} \,\lVert \psi(g^p x) - M^p \psi(x) \rVert_2^2 ,$$
#
# starting from $M = I$ and optimised with Adam {cite}`kingma2015adam`, it reaches
# $R^2 = 0.987 \pm 0.001$ over both models, while $M = I$ gives $0.05 \pm 0.08$ (CNN) and
# $0.49 \pm 0.03$ (MLP).
#
# In this chapter you will see:
#
# - the paper's recipe (Adam from $M = I$, on the paper's schedule of 150 epochs) and a closed-form
#   warm start (least squares for $p = 1$, then the same Adam) on held-out images, power by power,
#   with their training curves — the warm start reaches in a few epochs what the identity start
#   needs the long schedule for, so it is the fit this book uses from here on;
# - the eigenvalues of $M$ against the fourth roots of unity, where an exact representation of C4
#   would put them (chapter 1), and a fit constrained to $M^4 = I$ — the future work the paper names.
#
# The code is {py:mod}`esae.equivariance`; [Use it on your model](07b_your_model.ipynb) runs it on a network
# of your own.

# %% tags=["parameters"]
profile: str = "default"  # parameter profile that produced this page: smoke | default | paper
seed: int = 0  # seed for the mini-batch order of every fit
device: str = "auto"  # auto | cpu | cuda
epochs: int = 15  # Adam epochs of this book's fit (the least-squares warm start) over the training activations
paper_epochs: int = 150  # Adam epochs of the paper's recipe (the identity start); the paper: 150
constrained_epochs: int = 100  # epochs of the fits constrained to the identity M^4 (cosine-annealed rate)
batch_size: int = 256  # samples per Adam step (the paper's other trainings use 64)
lr: float = 0.001  # Adam learning rate
penalty: float = 1.0  # weight of the penalty on M^4 minus I in the penalised fit
jobs: int = 0  # worker processes fitting the Ms side by side, each single-threaded (0 means one per CPU core)
upstream: dict = {}  # chapters 2 and 3's parameters (layout, base models), injected by the book (esae.params.UPSTREAM)

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Markdown, display

import esae
from esae import autoencoders, equivariance as eq, pipeline
from esae.groups import power_error
from esae.sae_evaluation import data_basis

esae.params.check_profile(profile)
esae.params.check_run("04_fitting_m", profile)  # refuse sizes other than the profile's under its name
dev = esae.runtime.resolve_device(device)
esae.runtime.seed_everything(seed)
upstream = upstream or esae.params.upstream_parameters("04_fitting_m", profile)  # run by hand: the profile's
layout = pipeline.dataset_layout(upstream["02_dataset"])
base_configs = pipeline.base_model_configs(upstream["03_base_models"], layout)  # chapter 3's models
p04 = dict(epochs=epochs, paper_epochs=paper_epochs, constrained_epochs=constrained_epochs, batch_size=batch_size, lr=lr,
           penalty=penalty, seed=seed)  # this chapter's fit parameters; the extra seeds below move `seed`
fit_configs = pipeline.fit_configs(p04)  # one FitConfig per variant (validated)
PAPER_EPOCHS = esae.verdicts.PAPER_M_EPOCHS  # "we optimize M for 150 epochs"
MODELS = ("mlp", "cnn")

# %% [markdown]
# ## Activations and their rotations
#
# For each base model we take the pre-activation outputs of the last encoder layer (chapter 3) for
# the training images and for a disjoint held-out set, together with the activations of the same
# images rotated by 90°, 180° and 270°. M is fitted on the training images only; every number below
# is measured on the held-out images.

# %%
nets = pipeline.base_models(base_configs, dev)
train_images = autoencoders.training_set(base_configs["mlp"])
test_images = autoencoders.heldout_set(base_configs["mlp"])
heldout = {name: eq.orbit_activations(nets[name], test_images.images, device=dev) for name in MODELS}
display(Markdown(f"{len(train_images.images):,} training images and {len(test_images.images):,} held-out "
                 f"images, each in its 4 rotations; activations have d = {heldout['mlp'][0].shape[1]}."))

# %% [markdown]
# ## The fitted M, the paper's recipe, and the baseline M = I
#
# $R^2$ compares the prediction $M^p\psi(x)$ with the truth $\psi(g^p x)$. We report two
# definitions (see `esae.equivariance.r2`): **pooled** — one minus the residual sum of squares
# over the total sum of squares around each dimension's mean, summed over all dimensions, so a
# dimension counts by its variance — and **per-dimension** — the same ratio per dimension, then
# averaged, as scikit-learn's `r2_score` does. The average runs over the **non-trivial powers
# $p = 1..3$**: $p = 4$ ($g^4 = e$) is in the paper's loss, but its $R^2$ is trivially 1 for
# $M = I$ and would lift every baseline by a quarter of its gap to 1 (chapter 3 averages the
# same way). The table still shows $p = 4$.

# %%
# every fit of this chapter (each variant on each model; the warm start on the extra seeds of the error bars below) is
# independent: the ones the cache lacks run side by side in `jobs` worker processes first, single-threaded as here
seed_list = pipeline.seeds(upstream["03_base_models"])
seed_fits = {i: (pipeline.base_model_configs(pipeline.reseeded(upstream["03_base_models"], i), layout),
                 pipeline.fit_configs(pipeline.reseeded(p04, i))) for i in range(1, len(seed_list))}
pipeline.prefetch_fits([(base_configs[name], fit_configs, variant) for name in MODELS for variant in eq.VARIANTS]
                       + [(base_s[n], fits_s, "warm_start") for base_s, fits_s in seed_fits.values() for n in MODELS], jobs, dev)
fits = {(name, variant): pipeline.fit(base_configs[name], fit_configs, variant, dev) for name in MODELS for variant in eq.VARIANTS}
identity = torch.eye(heldout["mlp"][0].shape[1])
scores = {}
for name in MODELS:
    scores[(name, "identity")] = eq.r2(*heldout[name], identity)
    for variant in eq.VARIANTS:
        scores[(name, variant)] = eq.r2(*heldout[name], fits[(name, variant)].m)

rows = ("| model | M | R² p=1 | p=2 | p=3 | p=4 | mean p=1..3 (pooled) | mean p=1..3 (per-dim) |\n"
        "|---|---|---|---|---|---|---|---|\n")
for name in MODELS:
    for label, key in (("identity", "identity"), ("Adam from I (paper recipe)", "paper"),
                       ("Adam from least squares (fitted)", "warm_start")):
        s = scores[(name, key)]
        rows += (f"| {name.upper()} | {label} | " + " | ".join(f"{s['pooled'][p]:.4f}" for p in (1, 2, 3, 4))
                 + f" | **{s['pooled_mean']:.4f}** | {s['per_dim_mean']:.4f} |\n")
display(Markdown(rows))

# %%
fitted_mean = np.mean([scores[(n, "warm_start")]["pooled_mean"] for n in MODELS])
fitted_std = np.std([scores[(n, "warm_start")]["pooled_mean"] for n in MODELS])
display(Markdown(
    f"**Paper:** fitted M $R^2 = 0.987 \\pm 0.001$ over both models; $M = I$ gives $0.05 \\pm 0.08$ (CNN) and "
    f"$0.49 \\pm 0.03$ (MLP).  \n"
    f"**This run:** fitted M $R^2 = {fitted_mean:.3f} \\pm {fitted_std:.3f}$ (mean and spread of the two models, seed 0; "
    "the verdicts below use the spread over seeds) "
    f"(MLP {scores[('mlp', 'warm_start')]['pooled_mean']:.4f}, CNN {scores[('cnn', 'warm_start')]['pooled_mean']:.4f}, "
    f"pooled; per-dimension {scores[('mlp', 'warm_start')]['per_dim_mean']:.4f} and "
    f"{scores[('cnn', 'warm_start')]['per_dim_mean']:.4f}) after {epochs} epochs from the least-squares start. "
    f"The paper's recipe — Adam from $M = I$ for {paper_epochs} epochs"
    + (" (the paper's schedule)" if paper_epochs >= PAPER_EPOCHS else
       f" (the paper: {PAPER_EPOCHS}; this profile runs {paper_epochs})")
    + f" at batch {batch_size} — reaches {scores[('mlp', 'paper')]['pooled_mean']:.3f} (MLP) and "
    f"{scores[('cnn', 'paper')]['pooled_mean']:.3f} (CNN), "
    + ("so RESULT 1 holds with the paper's own start and schedule; " if paper_epochs >= PAPER_EPOCHS and min(
        scores[(n, 'paper')]['pooled_mean'] for n in MODELS) >= 0.98 else
       "short of the paper's 0.987; " if paper_epochs >= PAPER_EPOCHS else "not comparable with the paper's number; ")
    + f"$M = I$ gives {scores[('cnn', 'identity')]['pooled_mean']:.2f} (CNN) and "
    f"{scores[('mlp', 'identity')]['pooled_mean']:.2f} (MLP)."))

# %% [markdown]
# ## Which R² did the paper report?
#
# The paper gives no formula. Its baselines — $M = I$ at $0.05 \pm 0.08$ (CNN) and $0.49 \pm 0.03$
# (MLP) — depend strongly on the definition, while a fitted $M$ near 1 does not. The table evaluates
# the fitted $M$ (warm start) and $M = I$ under every candidate definition (`esae.metrics.R2_DEFINITIONS`),
# each averaged over $p = 1..3$ on the held-out images: **pooled centred** (ours), **per-dimension
# mean** (scikit-learn's `r2_score`), **variance-weighted** (algebraically equal to pooled centred;
# computed separately as a check), **uncentred** $1 - \text{SSE}/\sum y^2$, **per-sample** (each
# image's R² across its 256 dimensions, averaged), and **squared correlation** of all entries; on
# the pre-ReLU activations ψ the paper's equations use and on the post-ReLU hidden layer (where
# $M$ is refitted in closed form on the post-ReLU training activations, the least-squares start).

# %%
train_orbits = {name: eq.orbit_activations(nets[name], train_images.images, device=dev) for name in MODELS}
r2_table = {}
for name in MODELS:
    acts_h, rot_h = heldout[name]
    m_fit = fits[(name, "warm_start")].m
    post_h = (acts_h.clamp_min(0), rot_h.clamp_min(0))
    m_post = eq.lstsq_m(train_orbits[name][0].clamp_min(0), train_orbits[name][1][0].clamp_min(0))
    r2_table[name] = {
        "pre-ReLU": {"fitted": eq.r2_definitions(acts_h, rot_h, m_fit), "identity": eq.r2_definitions(acts_h, rot_h, identity)},
        "post-ReLU": {"fitted": eq.r2_definitions(*post_h, m_post), "identity": eq.r2_definitions(*post_h, identity)},
    }
del train_orbits
defs = list(esae.metrics.R2_DEFINITIONS)
rows = "| definition | activations | " + " | ".join(f"{n.upper()} fitted M | {n.upper()} M = I" for n in MODELS) + " |\n"
rows += "|---|---|" + "---|---|" * len(MODELS) + "\n"
for d in defs:
    for where in ("pre-ReLU", "post-ReLU"):
        rows += f"| {d} | {where} | " + " | ".join(
            f"{r2_table[n][where]['fitted'][d]:.3f} | {r2_table[n][where]['identity'][d]:.3f}" for n in MODELS) + " |\n"
rows += "| **paper** | | 0.987 (both) | 0.49 ± 0.03 | 0.987 (both) | 0.05 ± 0.08 |\n"
display(Markdown(rows))

# %%
PAPER_ID = {"mlp": (0.49, 0.03), "cnn": (0.05, 0.08)}
matches = [(d, where) for d in defs for where in ("pre-ReLU", "post-ReLU")
           if all(abs(r2_table[n][where]["identity"][d] - PAPER_ID[n][0]) <= 2 * PAPER_ID[n][1] for n in MODELS)
           and all(r2_table[n][where]["fitted"][d] >= 0.95 for n in MODELS)]
display(Markdown(
    ("Definitions that reproduce both baselines within two of the paper's standard deviations, with a fitted M ≥ 0.95: "
     + ", ".join(f"**{d}** ({w})" for d, w in matches) + "." if matches else
     "**No candidate definition reproduces both of the paper's baselines** (within two of its standard deviations) "
     "on this run's models. ")
    + " The identity baseline is a property of the base model as much as of the definition: ours are trained "
    "differently from the paper's (chapter 3), so a mismatch of the baseline says as much about the networks as "
    "about the formula. The fitted M (pre-ReLU) ranges from "
    f"{min(r2_table[n]['pre-ReLU']['fitted'][d] for n in MODELS for d in defs):.3f} to "
    f"{max(r2_table[n]['pre-ReLU']['fitted'][d] for n in MODELS for d in defs):.3f} over the definitions and models"
    + (", near 1 under every one: RESULT 1 does not depend on the definition." if min(
        r2_table[n]['pre-ReLU']['fitted'][d] for n in MODELS for d in defs) >= 0.95 else
       ": under some definitions it falls short of the paper's 0.987.")))

# %% [markdown]
# ## Training curves, and a closed-form warm start
#
# Starting from the identity, Adam has to move all $256^2$ entries of M a long way. But the
# $p = 1$ term alone is a linear least-squares problem with a closed-form solution; starting Adam
# there (and then optimising all four powers together) skips most of the descent.
# {numref}`fig-04-training` shows held-out $R^2$ after each epoch for both starts.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
lo = min(min(r["r2"] for r in fits[(n, "paper")].history) for n in MODELS)
y_low = max(lo, -0.2) - 0.02
for ax, name in zip(axes, MODELS):
    for variant, style in (("paper", "-"), ("warm_start", "--")):
        h = fits[(name, variant)].history
        ax.plot([r["epoch"] for r in h], [r["r2"] for r in h], style, label=variant.replace("_", " "))
    identity = scores[(name, "identity")]["pooled_mean"]
    if identity >= y_low:
        ax.axhline(identity, color="0.6", lw=1, label="M = I")
    else:  # far below the curves: say where it is instead of squashing them
        ax.annotate(f"M = I: R² = {identity:.2f} (below the axis)", (0.02, 0.03), xycoords="axes fraction",
                    fontsize=8, color="0.35")
    ax.axhline(0.987, color="k", lw=0.8, ls=":", label="paper's R²")
    ax.set_title(f"{name.upper()} autoencoder"), ax.set_xlabel("epoch (log scale)"), ax.set_xscale("log")
axes[0].set_ylabel("held-out R² (pooled, mean over p)")
axes[1].legend(fontsize=8, loc="lower right")
axes[0].set_ylim(y_low, 1.0)
fig.tight_layout()
esae.figures.show(fig, "fig-04-training", "Fitting M: held-out R² (pooled, mean over the powers p) after each "
                  "epoch, from the paper's start M = I and from the least-squares warm start; dotted: the paper's "
                  "R². The baseline M = I is drawn where it falls inside the plotted range, else its value is "
                  "written in the corner.")


# %%
def first_epoch_reaching(history: list[dict], target: float) -> int | None:
    return next((r["epoch"] for r in history if r["r2"] >= target), None)


rows = "| model | start | epochs to R² ≥ 0.98 | epochs run | final R² |\n|---|---|---|---|---|\n"
for name in MODELS:
    for variant in ("paper", "warm_start"):
        h = fits[(name, variant)].history
        reach = first_epoch_reaching(h, 0.98)
        rows += (f"| {name.upper()} | {variant.replace('_', ' ')} | {reach if reach else 'not within ' + str(len(h))} | "
                 f"{len(h)} | {h[-1]['r2']:.4f} |\n")
display(Markdown(rows))

# %% [markdown]
# Epochs, not seconds, compare the two starts here: the fits come from the cache, and their
# recorded wall times depend on what else the machine ran when each was trained.
# `benchmarks/bench_fit_m.py` measures the comparison in wall time (both starts in one run).
#
# ## Eigenvalues: how close is M to a representation of C4?
#
# If $\psi(g x) = M \psi(x)$ held exactly for every image, then $M^4\psi(x) = \psi(g^4 x) = \psi(x)$,
# and on the span of the activations M would satisfy $M^4 = I$, with eigenvalues among
# $\{1, -1, i, -i\}$ (chapter 1). Directions with eigenvalue 1 are invariant; $-1$ flips sign under
# each quarter turn (and is restored by a half turn); $\pm i$ rotate within a plane, returning after
# four quarter turns. {numref}`fig-04-eigenvalues` shows where the fitted eigenvalues actually lie.

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 4.4))
for ax, name in zip(axes, MODELS):
    esae.plots.eigenvalues_plot({"fitted": torch.linalg.eigvals(fits[(name, "warm_start")].m.double()),
                                 "constrained M⁴ = I": torch.linalg.eigvals(fits[(name, "exact")].m.double())}, ax=ax)
    ax.set_title(f"{name.upper()}: eigenvalues of M")
fig.tight_layout()
esae.figures.show(fig, "fig-04-eigenvalues", "Eigenvalues of the fitted M (warm start) and of the fit constrained "
                  "to M⁴ = I, for each base model, with the unit circle and the fourth roots of unity.")

# %%
def root_distance(m: torch.Tensor) -> float:
    roots = torch.tensor([1, 1j, -1, -1j], dtype=torch.complex128)
    e = torch.linalg.eigvals(m.double())
    return float((e[:, None] - roots[None]).abs().min(1).values.median())


# where the activations go: the principal subspace holding 99.9 % of their variance
spans = {name: data_basis(heldout[name][0]) for name in MODELS}
# ‖M⁴ − I‖ / ‖I‖ of every fit, over all of R^256 ("all") and on the activations' span ("span")
m4_error = {(name, v, where): power_error(fits[(name, v)].m.double(), 4, spans[name] if where == "span" else None)
            for name in MODELS for v in eq.VARIANTS for where in ("all", "span")}
rows = ("| model | M | held-out R² | ‖M⁴ − I‖ / ‖I‖, all of R²⁵⁶ | on the activations' span "
        "| median distance of eigenvalues to a 4th root |\n|---|---|---|---|---|---|\n")
for name in MODELS:
    for variant, label in (("paper", "Adam from I (paper recipe)"), ("warm_start", "fitted (warm start)"),
                           ("penalty", f"penalised (weight {penalty:g})"), ("exact", "exact: M = S R S⁻¹")):
        m = fits[(name, variant)].m
        rows += (f"| {name.upper()} | {label} | {scores[(name, variant)]['pooled_mean']:.4f} | "
                 f"{m4_error[(name, variant, 'all')]:.3f} | {m4_error[(name, variant, 'span')]:.3f} | "
                 f"{root_distance(m):.3f} |\n")
display(Markdown(rows + "\n" + ", ".join(f"{n.upper()} activations span {spans[n].shape[0]} of "
                                         f"{heldout[n][0].shape[1]} dimensions" for n in MODELS) + "."))

# %% [markdown]
# The constrained fits impose what the group structure demands. The *penalised* fit adds
# $\lambda\lVert M^4 - I\rVert_F^2/d$ to the loss. The *exact* fit parametrises
# $M = S R S^{-1}$, where $R$ is block-diagonal with the eigenvalues of the unconstrained fit
# snapped to the nearest fourth roots of unity ($1\times 1$ blocks for $\pm 1$, $2\times 2$
# quarter-turn blocks for $\pm i$) and only $S$ is learned, so $M^4 = I$ holds to float precision
# throughout. Both run for `constrained_epochs` with a cosine-annealed learning rate: the data
# term and the constraint pull against each other, and at a constant rate Adam's last iterates
# oscillate. Comparing their $R^2$ with the unconstrained fit's says how much of the fit relies on
# *breaking* the group structure.
#
# **Where to measure $M^4 = I$.** The activations fill only part of $\mathbb{R}^{256}$ (the count
# is printed under the table). In the other directions the data says nothing about $M$: the
# paper's identity start leaves them at $I$, and our least-squares start shrinks towards $I$ for
# the same reason. (A start that shrank towards 0 there would make $\lVert M^4 - I\rVert$ over all
# of $\mathbb{R}^{256}$ look large for a reason no image could reveal.) What the group structure
# constrains is $M$ on the activations' span, so the table reports the error there too; it is the
# number to read.
#
# ## Error bars: R² of M over seeds
#
# The paper reports $R^2 = 0.987 \pm 0.001$. Chapter 3 trained its base models on `n_seeds`
# independent seeds (the number is chapter 3's parameter); for each, $M$ is fitted the same way
# (the warm start, with this chapter's epochs and its seed moved by the same offset) and scored on
# that seed's own held-out images. Seed 0 is the fit above; the comparison variants (the paper's
# recipe, the constrained fits) are fitted for seed 0 only.

# %%
seed_r2 = {seed_list[0]: {n: {"fitted": scores[(n, "warm_start")], "identity": scores[(n, "identity")]} for n in MODELS}}
for i, s in enumerate(seed_list[1:], start=1):
    base_s, fits_s = seed_fits[i]
    held_s = autoencoders.heldout_set(base_s["mlp"]).images
    seed_r2[s] = {}
    for n in MODELS:
        net_s = pipeline.base_model(base_s[n], dev)[0]
        acts_s = eq.orbit_activations(net_s, held_s, device=dev)
        seed_r2[s][n] = {"fitted": eq.r2(*acts_s, pipeline.fitted_m(base_s[n], fits_s, dev)),
                         "identity": eq.r2(*acts_s, torch.eye(acts_s[0].shape[1]))}
        del net_s, acts_s
r2_stats = {n: {what: esae.beyond.mean_std([seed_r2[s][n][what]["pooled_mean"] for s in seed_list])
                for what in ("fitted", "identity")} for n in MODELS}
rows = "| seed | " + " | ".join(f"{n.upper()} fitted M | {n.upper()} M = I" for n in MODELS) + " |\n|---|" + "---|---|" * len(MODELS) + "\n"
rows += "".join(f"| {s} | " + " | ".join(f"{seed_r2[s][n]['fitted']['pooled_mean']:.4f} | {seed_r2[s][n]['identity']['pooled_mean']:.4f}"
                                        for n in MODELS) + " |\n" for s in seed_list)
rows += "| **mean ± std** | " + " | ".join(f"{esae.beyond.fmt(r2_stats[n]['fitted'], 4)} | {esae.beyond.fmt(r2_stats[n]['identity'], 4)}"
                                           for n in MODELS) + " |\n"
display(Markdown(f"Held-out R² (pooled, mean over p = 1..3) per seed; {len(seed_list)} seed(s).\n\n" + rows
                 + ("" if len(seed_list) > 1 else "\nOne seed under this profile: no error bars.")))

# %% [markdown]
# ## What this run showed

# %% tags=["remove-input"]
results = {
    "seeds": seed_list,
    "r2_fitted_seeds": {n: [seed_r2[s][n]["fitted"]["pooled_mean"] for s in seed_list] for n in MODELS},
    "r2_fitted_per_power_seeds": {n: {str(p): [seed_r2[s][n]["fitted"]["pooled"][p] for s in seed_list] for p in (1, 2, 3)}
                                  for n in MODELS},
    "r2_identity_seeds": {n: [seed_r2[s][n]["identity"]["pooled_mean"] for s in seed_list] for n in MODELS},
    "r2_fitted_mean_std": {n: r2_stats[n]["fitted"] for n in MODELS},
    "r2_identity_mean_std": {n: r2_stats[n]["identity"] for n in MODELS},
    "r2_fitted": {n: scores[(n, "warm_start")]["pooled_mean"] for n in MODELS},
    "r2_identity": {n: scores[(n, "identity")]["pooled_mean"] for n in MODELS},
    "r2_constrained": {n: scores[(n, "exact")]["pooled_mean"] for n in MODELS},
    "m4_minus_identity": {n: m4_error[(n, "warm_start", "all")] for n in MODELS},
    "m4_minus_identity_constrained": {n: m4_error[(n, "exact", "all")] for n in MODELS},
    "m4_minus_identity_on_span": {n: m4_error[(n, "warm_start", "span")] for n in MODELS},
    "activation_span_dims": {n: int(spans[n].shape[0]) for n in MODELS},
    "r2_definition": "pooled over dimensions, mean over the non-trivial powers p = 1..3, held-out images",
    "r2_per_power": {n: {v: {str(p): scores[(n, v)]["pooled"][p] for p in (1, 2, 3, 4)}
                         for v in ("identity", *eq.VARIANTS)} for n in MODELS},
    "r2_definitions": r2_table,
    "r2_definitions_matching_paper": [f"{d} ({w})" for d, w in matches],

    "r2_per_dim": {n: {v: scores[(n, v)]["per_dim_mean"] for v in ("identity", *eq.VARIANTS)} for n in MODELS},
    "r2_paper_recipe": {n: scores[(n, "paper")]["pooled_mean"] for n in MODELS},
    "paper_recipe_epochs": paper_epochs,
    "fit": f"Adam from the least-squares solution for p = 1, {epochs} epochs, batch {batch_size}, lr {lr:g}",
    "r2_penalty": {n: scores[(n, "penalty")]["pooled_mean"] for n in MODELS},
    "epochs_to_r2_0.98": {n: {v: first_epoch_reaching(fits[(n, v)].history, 0.98) for v in ("paper", "warm_start")}
                          for n in MODELS},
}
esae.results.write_results(profile, "04_fitting_m", results)
display(Markdown("\n".join(
    f"- **{n.upper()}**: the fitted M explains the rotated held-out activations with R² "
    f"**{results['r2_fitted'][n]:.4f}**"
    + (f" (mean ± std over {len(seed_list)} seeds: {esae.beyond.fmt(r2_stats[n]['fitted'], 4)})" if len(seed_list) > 1 else "")
    + f" (paper: 0.987 ± 0.001; M = I: {results['r2_identity'][n]:.3f}; the paper's "
    f"recipe (identity start, {paper_epochs} epochs): {results['r2_paper_recipe'][n]:.3f}). On the "
    f"{results['activation_span_dims'][n]}-dimensional span of the activations ‖M⁴ − I‖ / ‖I‖ is "
    f"{results['m4_minus_identity_on_span'][n]:.3f}. The penalised fit brings that to "
    f"{m4_error[(n, 'penalty', 'span')]:.3f} at held-out R² "
    f"{results['r2_penalty'][n]:.4f}; the exact parametrisation M = S R S⁻¹ reaches R² "
    f"{results['r2_constrained'][n]:.4f}."
    for n in MODELS) + f"""

So the group structure is almost free: where the activations live, an M that represents C4 to
within a few per cent explains the rotations {"as well as or better than" if all(
results['r2_penalty'][n] >= results['r2_fitted'][n] - 0.005 for n in MODELS) else "nearly as well as"}
the unconstrained fit (the penalised fit also had {constrained_epochs} cosine-annealed epochs
against the unconstrained fit's {epochs}). The exact parametrisation does {"much " if min(
results['r2_fitted'][n] - results['r2_constrained'][n] for n in MODELS) > 0.1 else ""}worse, and
since the penalised fit shows that a near-exact representation fitting the data exists, the gap
is the optimisation's: Adam on S through S⁻¹, starting from the unconstrained fit's
eigenvectors, moves slowly and is badly conditioned — not a cost of the constraint.

The numbers are in `results/{profile}/04_fitting_m.json`.

""" + esae.verdicts.conclusion(results["verdicts"])))
