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
# # The adaptively equivariant SAE
#
# Chapter 4 found that a single matrix $M$ explains how the base autoencoders' activations move
# when their input image turns by 90°. This chapter builds the paper's sparse autoencoder on that
# fact {cite}`erdogan2025equivariant`: an SAE that is **invariant** — it gives every rotation of an
# image the same sparse code and reconstructs the activation of the canonical image — made
# **equivariant** by $M$, which turns the canonical reconstruction back into the rotated one.
#
# You will learn:
#
# - how the four SAEs of the paper are built and trained with sae-lens — a regular TopK SAE, a
#   wide one with $|G| = 4$ times the latents, one with a two-layer encoder, and the
#   invariant/equivariant pair — and what it took to train them fast on a CPU;
# - why the invariant SAE's target is simply the generated image under the paper's reading of the
#   dataset (shapes drawn upright, chapter 2), and what changes under the other reading (a compact
#   table at the end);
# - how to read the dictionary of the equivariant SAE: transforming $D \mapsto M^p D$ sorts its
#   features into invariant ones (what is in the image) and equivariant ones (where and how it is
#   oriented), and pushing a feature through the base model's decoder shows what it draws and how
#   it turns (the picture of the paper's Figure 1);
# - where each SAE sits on the sparsity/reconstruction frontier (Figure 4), and how much $M$ adds
#   to the invariant SAE's reconstructions.
#
# Everything used here lives in {py:mod}`esae.saes`; chapter 6 probes the features of these same SAEs
# ({py:func}`esae.pipeline.load_saes`).

# %% tags=["parameters"]
profile: str = "default"  # parameter profile that produced this page: smoke | default | paper
seed: int = 0  # seed for every random choice in the chapter
device: str = "auto"  # auto | cpu | cuda
ks: list = [8, 16, 32]  # TopK values K of every SAE (each in 1..latents)
expansion: int = 8  # latents per activation dimension of the regular SAE (the wide one has 4 times more)
d_hidden: int = 512  # width of the two-layer encoder's hidden layer
n_epochs: int = 500  # passes over the training images (each with a fresh random rotation) for regular, wide, two-layer
invariant_epochs: int = 500  # passes over the training images for the invariant SAE
batch_size: int = 64  # samples per Adam step
lr: float = 0.001  # Adam learning rate
lr_decay_fraction: float = 0.0  # final fraction of the steps over which the rate decays linearly to 0
aux_coefficient: float = 1.0  # weight of sae-lens's AuxK loss for dead latents (0 switches it off)
dead_window: int = 10000  # samples without firing after which a latent counts as dead during training
n_eval: int = 2000  # held-out images (times their 4 rotations) for the frontier metrics (at least 10)
invariance_threshold: float = 0.5  # cos(d, Md) at or above which a feature counts as invariant (-1..1)
feature_k: int = 16  # the K whose features are classified and drawn (one of ks)
n_features_shown: int = 4  # invariant and equivariant features drawn per base model (1..16)
compare_layouts: bool = True  # also train and evaluate everything under the other dataset layout (one compact table)
jobs: int = 0  # worker processes training the SAE sets in parallel, each single-threaded (0: one per CPU core)
upstream: dict = {}  # chapters 2-4's parameters (layout, base models, M), injected by the book (esae.params.UPSTREAM)

# %% tags=["hide-input"]
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Markdown, display

import esae
from esae import pipeline, sae_evaluation, sae_training, saes
from esae.autoencoders import heldout_set
from esae.params import check_float, check_int, check_int_list, check_profile, check_run

check_profile(profile)
check_run("05_equivariant_sae", profile)  # refuse sizes other than the profile's under its name
check_int_list("ks", ks, 1, 256 * expansion)
check_int("n_eval", n_eval, 10)
check_float("invariance_threshold", invariance_threshold, -1.0, 1.0)
check_int("n_features_shown", n_features_shown, 1, 16)
check_int("jobs", jobs, 0)
if feature_k not in ks:
    raise ValueError(f"feature_k must be one of ks {list(ks)}, got {feature_k}")
upstream = upstream or esae.params.upstream_parameters("05_equivariant_sae", profile)  # run by hand: the profile's
layout = pipeline.dataset_layout(upstream["02_dataset"])
other_layout = pipeline.other_layout(layout)
sae_parameters = dict(ks=ks, expansion=expansion, d_hidden=d_hidden, n_epochs=n_epochs, invariant_epochs=invariant_epochs,
                      batch_size=batch_size, lr=lr, lr_decay_fraction=lr_decay_fraction, aux_coefficient=aux_coefficient,
                      dead_window=dead_window, seed=seed)
configs = pipeline.sae_configs(sae_parameters, layout)  # validates K, expansion, hidden size, epochs, batch, lr, ...
base_configs = pipeline.base_model_configs(upstream["03_base_models"], layout)  # chapter 3's models
fit_configs = pipeline.fit_configs(upstream["04_fitting_m"])  # chapter 4's M
dev = esae.runtime.resolve_device(device)
esae.runtime.seed_everything(seed)
chapter_start = time.perf_counter()

# %% [markdown]
# ## Four SAEs on sae-lens
#
# All SAEs read the 256-dimensional pre-activations $\psi(x)$ of the base models' middle layer
# (chapter 3) and are TopK SAEs {cite}`gao2024scaling`: the encoder keeps the $K$ largest latents
# and zeroes the rest, so every input is reconstructed from at most $K$ dictionary vectors (the
# rows of $W_{\mathrm{dec}}$).
#
# | SAE | encoder | latents | trained on |
# |---|---|---|---|
# | regular | linear | 8 × 256 = 2,048 | rotation-augmented activations |
# | wide | linear | 4 × 2,048 = 8,192 | rotation-augmented activations |
# | two-layer | Linear(256, 512) → ReLU → Linear(512, 2,048) | 2,048 | rotation-augmented activations |
# | invariant | as two-layer | 2,048 | pairs: input $\psi(g^p x)$, target $\psi(x)$ |
# | equivariant | the invariant SAE, plus $M$ | 2,048 | — ($M$ comes from chapter 4) |
#
# The wide SAE has room for one latent per orientation of every feature — the "optimally sparse"
# but wasteful solution the paper wants to avoid. The invariant SAE minimises
#
# $$\mathcal{L}_{\text{inv}} = \mathbb{E}_{x,\,p}\,\lVert \psi(x) - D(E(\psi(g^p x)))\rVert_2^2,$$
#
# with $x$ the canonical image of its orbit (which image that is needs care on this dataset: see
# the next section): whatever the rotation of its input, it must return the canonical activation,
# so its encoder has to forget the orientation. A linear encoder cannot do
# that, hence the two-layer encoder; the decoder stays linear so that reconstructions are still
# sparse sums of dictionary vectors. The **equivariant SAE** reconstructs $\psi(g^p x)$ as
# $M^p D(E(\psi(g^p x)))$.
#
# How this maps onto sae-lens {cite}`bloom2024saelens`: the regular and wide SAEs are sae-lens's own `TopKSAE`; the
# two-layer encoder is registered with sae-lens as the architecture `two_layer_topk` and the
# equivariant SAE as `equivariant_topk` (its $M$ is saved in the same `sae_weights.safetensors`
# as the SAE), so `sae_lens.SAE.load_from_disk` reloads any of them. Training uses sae-lens's
# `SAETrainer` (Adam, gradient clipping, dead-latent tracking and its AuxK loss, which lets latents
# that stopped firing learn the residual). Two extensions were needed: the invariance loss needs
# (input, target) pairs, and sae-lens's trainer only ever looks at a batch's first axis, so a batch
# of pairs stacked as `(B, 2, 256)` passes through it untouched and only the SAE's
# `training_forward_pass` reads the target from it; and that pass is *sparse* — the decoder gathers
# only the $K$ active dictionary rows and the encoder's backward touches only the $K$ selected
# columns — with the same loss and gradients as sae-lens's dense pass (checked to 1e-10 in
# `tests/test_saes.py`) at a fraction of the cost (`benchmarks/bench_saes.py`).
#
# The training settings of this profile. Every SAE gets the same number of epochs, as in the paper
# (500 each): the invariance objective — learning to find an orbit's canonical member — keeps
# improving for longer than the reconstruction SAEs do, but a longer run for it alone would hand the
# equivariant SAE a larger budget in the comparisons below and in chapter 6 (`invariant_epochs`
# exists to study that, not to win with it):

# %%
example = configs[("regular", ks[0])]
inv_epochs = configs[("invariant", ks[0])].n_epochs
display(Markdown(
    f"Profile **{profile}**: K ∈ {list(ks)}, {example.n_epochs} epochs over the training images "
    f"(each image with a fresh random rotation every epoch)"
    + (f" for the regular, wide and two-layer SAEs and {inv_epochs} for the invariant SAE"
       if inv_epochs != example.n_epochs else "")
    + f", batch {example.batch_size}, Adam at "
    f"learning rate {example.lr:g}" + (f" decaying linearly to 0 over the last {example.lr_decay_fraction:.0%} "
                                       "of the steps" if example.lr_decay_fraction else "")
    + f", AuxK weight {example.aux_coefficient:g}, on `{dev}`. The paper: 500 epochs over 10,000 "
    "images, batch 64, Adam at 1e-3."))

# %% [markdown]
# ## Which image is canonical?
#
# The paper takes the generated image $x$ as the canonical representative of its orbit
# $\{x, gx, g^2x, g^3x\}$. Under this book's dataset layout (chapter 2, **upright**, the paper's
# reading) that is exactly what a sample offers: every sample is $g^p x$ with $x$ generated with
# its shapes upright, and $p$ is known by construction. So the invariant SAE's target is simply
# the generated image's activation $\psi(x)$ — no rule is needed to choose it
# (`sae_training.target_rotation`), and an encoder can recognise it, since only the upright member of an
# orbit has all its shapes upright (except for the 16 label sets made only of rectangles and
# diagonals, whose half turn is upright too: 0.4 % of them).
#
# Under the other reading (**independent**, each quadrant drawn in its own random orientation) the
# four rotations of a generated image are equally likely generated images and nothing would tell
# an encoder which rotation to undo; there this book falls back to the member with the smallest
# label code (`sae_training.canonical_rotation`). The compact table at the end of the chapter shows what
# changes under that reading.

# %% [markdown]
# ## Training
#
# The base models and the training images are chapter 3's, $M$ is chapter 4's (all cache hits).
# `pipeline.saes` trains every SAE of the chapter for one base model — or loads it from the
# cache, keyed by its training configuration, the base model's weights and the training images.
# The chapter's eight sets of 12 SAEs (two base models × three seeds, and the other layout's two)
# are first trained side by side by `pipeline.prefetch_saes`, one set per worker process (`jobs`),
# each single-threaded like every training in the book (the same weights on any number of cores);
# the cells below then find them in the cache.

# %%
# every SAE set of the chapter (seed 0, the other seeds, the other layout) at once, one set per worker
# process; the cells below then load them from the cache
seed_list = pipeline.seeds(upstream["03_base_models"])
sae_sets = [(base_configs[model], configs) for model in saes.BASE_MODELS]
for i in range(1, len(seed_list)):
    cfg_i = pipeline.seed_configs(upstream["03_base_models"], upstream["04_fitting_m"], sae_parameters, i, layout)
    sae_sets += [(cfg_i.base[model], cfg_i.saes) for model in saes.BASE_MODELS]
if compare_layouts:
    sae_sets += [(base, pipeline.sae_configs(sae_parameters, other_layout))
                 for base in pipeline.base_model_configs(upstream["03_base_models"], other_layout).values()]
start = time.perf_counter()
n_trained = pipeline.prefetch_saes(sae_sets, jobs, dev)
if n_trained:
    print(f"{n_trained} of {len(sae_sets)} SAE sets trained side by side in {time.perf_counter() - start:.0f} s")

# %%
nets = pipeline.base_models(base_configs, dev)
ms = {model: pipeline.fitted_m(base_configs[model], fit_configs, dev) for model in saes.BASE_MODELS}
trained = {}
for model in saes.BASE_MODELS:
    start = time.perf_counter()
    trained[model] = pipeline.saes(base_configs[model], configs, fit_configs, dev)
    print(f"{model}: {len(trained[model])} SAEs ready (loaded or trained) in {time.perf_counter() - start:.0f} s")

rows = "| base model | SAE | K | latents | training samples | training time (s) | samples/s | final MSE |\n|---|---|---|---|---|---|---|---|\n"
for model, results in trained.items():
    for (name, k), result in results.items():
        if name == "equivariant":
            continue
        h = result.history
        final = float(np.mean(h["mse"][-max(1, len(h["mse"]) // 20):]))
        rows += (f"| {model} | {name} | {k} | {result.sae.cfg.d_sae:,} | {h['samples']:,} | {h['seconds']:.1f} "
                 f"| {h['samples_per_s']:,.0f} | {final:.3g} |\n")
display(Markdown(rows))

# %% [markdown]
# The table lists what each SAE cost when it was trained (a cached SAE keeps the numbers of its
# original run; with workers, a set's time is shared with the set trained beside it). The final
# MSE is the mean training loss over the last 5 % of the steps, summed over the 256 activation
# dimensions; for the invariant SAE it is the invariance loss, measured against
# the canonical activation. {numref}`fig-05-training` shows the training curves for the middle K.

# %%
k_mid = ks[len(ks) // 2]
curves = {model.upper(): {name: trained[model][(name, k_mid)].history["mse"] for name in saes.TRAINED_NAMES}
          for model in saes.BASE_MODELS}
fig = esae.plots.curves_plot(curves, xlabel="Adam step", ylabel="training MSE (sum over dimensions)",
                             smooth=max(1, len(curves["MLP"]["regular"]) // 100))
esae.figures.show(fig, "fig-05-training", f"Training loss of each SAE at K = {k_mid}, smoothed (for the invariant "
                  "SAE: the invariance loss against the canonical activation).")

# %% [markdown]
# ## Is the invariant SAE invariant?
#
# Its training objective only asks that every rotation of an image *decodes* to the same canonical
# activation; whether the sparse code itself is the same across the orbit is a separate question.
# We measure the relative spread of the latents around their orbit mean,
# $\sum_{i,p}\lVert z_{ip} - \bar z_i\rVert^2 / \sum_{i,p} \lVert z_{ip}\rVert^2$ with
# $z_{ip} = E(\psi(g^p x_i))$, on held-out images (0 means exactly invariant; latents that ignore
# the input entirely would also score 0, so we report it next to the reconstructions below). The
# two-layer SAE, same architecture but trained on the usual reconstruction loss, is the comparison.

# %%
heldout = heldout_set(base_configs["mlp"])
n_used = min(n_eval, len(heldout.images))
eval_images = heldout.images[:n_used]
canonical = sae_training.target_rotation(heldout[:n_used], configs[("invariant", ks[0])].canonical)
# entry [i, p]: rotation p of the canonical member of image i's orbit (images and activations)
orbit_images = sae_training.canonical_orbit(torch.stack([esae.groups.rotate(eval_images, p) for p in range(4)], 1), canonical)
eval_acts = {model: sae_training.canonical_orbit(sae_training.orbit_acts(nets[model], eval_images, device=dev), canonical)
             for model in saes.BASE_MODELS}

spread = {model: {name: sae_evaluation.orbit_spread(trained[model][(name, k)].sae, eval_acts[model])
                  for name in ("two_layer", "invariant") for k in [k_mid]}
          for model in saes.BASE_MODELS}
rows = "| base model | two-layer SAE | invariant SAE |\n|---|---|---|\n"
for model in saes.BASE_MODELS:
    rows += f"| {model} | {spread[model]['two_layer']:.3f} | {spread[model]['invariant']:.3f} |\n"
less = [m for m in saes.BASE_MODELS if spread[m]["invariant"] < spread[m]["two_layer"]]
display(Markdown(
    f"Relative spread of the latents over each orbit (K = {k_mid}, {n_used} held-out images):\n\n" + rows
    + "\n" + (f"The invariant SAE's codes depend less on the orientation than the two-layer SAE's on "
               f"{', '.join(m.upper() for m in less)}" if less else
               "The invariant SAE's codes are not less orientation-dependent than the two-layer SAE's")
    + ", but they are far from exactly invariant: the objective only asks the rotations to *decode* to the same "
      "canonical activation, and a redundant dictionary lets them do so through partly different latents "
      "(the next table shows how well they decode)."))

# %% [markdown]
# **Does the invariant SAE find its target?** On held-out orbits: $R^2$ of $D(E(\psi(g^p x)))$
# against its target $\psi(x)$ (the generated image) and against the orbit mean
# $\frac14\sum_q\psi(g^q x)$ — the best an encoder that cannot tell the rotations apart could do —
# and the explained variance of the rotated activations without and with $M^p$.

# %%
fits = {}
for model in saes.BASE_MODELS:
    inv_sae = trained[model][("invariant", k_mid)].sae
    fits[model] = sae_evaluation.invariant_fit(inv_sae, eval_acts[model])
    acts_flat = eval_acts[model].reshape(-1, eval_acts[model].shape[-1])
    fits[model]["ev_with_m"] = sae_evaluation.evaluate(saes.EquivariantTopKSAE.from_invariant(inv_sae, ms[model].to(dev)),
                                             acts_flat, torch.arange(4).repeat(n_used))["explained_variance"]
    fits[model]["ev_without_m"] = sae_evaluation.evaluate(inv_sae, acts_flat)["explained_variance"]
rows = ("| base model | $R^2$ vs its target | $R^2$ vs orbit mean | explained variance without $M$ | with $M^p$ |\n"
        "|---|---|---|---|---|\n")
for model, f in fits.items():
    rows += f"| {model} | {f['r2_target']:.3f} | {f['r2_orbit_mean']:.3f} | {f['ev_without_m']:.3f} | {f['ev_with_m']:.3f} |\n"
display(Markdown(rows + "\n" + " ".join(
    f"**{m.upper()}**: the invariant SAE (K = {k_mid}) is closer to "
    f"{'its target' if f['r2_target'] >= f['r2_orbit_mean'] else 'the orbit mean'} "
    f"($R^2$ {f['r2_target']:.2f} against {f['r2_orbit_mean']:.2f}), and $M^p$ takes the explained variance of the "
    f"rotated activations from {f['ev_without_m']:.2f} to {f['ev_with_m']:.2f}." for m, f in fits.items())))

# %% [markdown]
# ## Reading the dictionary: invariant and equivariant features
#
# The equivariant SAE reconstructs rotation $p$ as $M^p D z$: its dictionary, seen from the
# rotated image, is $M^p D$. A feature $d$ (a row of $D$) with $M d \approx d$ contributes the same
# thing in every orientation — an **invariant** feature; one with $M d$ pointing elsewhere moves
# when the image turns — an **equivariant** feature. We score each feature by
# $s(d) = \cos(d, M d)$.
#
# *Choosing the threshold.* If $M$ were an exact orthogonal representation of C4 ($M^4 = I$), its
# eigenvalues would be $1, -1, \pm i$, and splitting $d$ over the eigenspaces gives
# $s(d) = w_{+1} - w_{-1}$, where $w_\lambda$ is the fraction of $\lVert d\rVert^2$ on eigenvalue
# $\lambda$ (a $\pm i$ pair turns its plane by 90°, orthogonal to itself, and contributes 0). So
# $s(d) \ge \tau$ guarantees $w_{+1} \ge \tau$: at least a fraction $\tau$ of the feature lies in
# the invariant subspace. With $\tau = 1/2$ (this profile's `invariance_threshold`) a feature is
# called invariant when *most* of it is unchanged by rotation — the majority rule, with nothing
# tuned to the data. Since the fitted $M$ is only approximately orthogonal, we cross-check with
# the invariant fraction itself, $w_{+1} = d^\top P d / \lVert d\rVert^2$ with
# $P = \frac14 \sum_{p=0}^{3} M^p$ (the projector onto the fixed subspace for an exact
# representation). The regular SAE, whose dictionary is read through the same $M$, is the
# comparison.
#
# *Where to score.* The base models' activations fill only part of the 256 dimensions (the count is
# printed below). $M$ is fitted where the activations go; in the directions they never visit,
# nothing moves Adam's iterate from its identity start, so any component of a dictionary vector
# there — such as the untrained random rows of latents that never fire — would look invariant. We
# therefore score each vector's projection onto the span holding 99.9 % of the held-out
# activations' variance (`sae_evaluation.data_basis`), and only features that fire on held-out inputs.
# {numref}`fig-05-scores` shows the scores.

# %% tags=["hide-input"]
scores, fractions, live, spans = {}, {}, {}, {}
for model in saes.BASE_MODELS:
    m = ms[model].to(dev)
    flat = eval_acts[model].reshape(-1, eval_acts[model].shape[-1]).to(dev)
    basis = sae_evaluation.data_basis(flat)
    spans[model] = basis.shape[0]
    for name in ("equivariant", "regular"):
        sae = trained[model][(name, feature_k)].sae
        w = sae.W_dec.detach()
        live[(model, name)] = sae_evaluation.latent_statistics(sae, flat)["frequency"] > 0
        scores[(model, name)] = sae_evaluation.feature_scores(w, m, basis).cpu()
        fractions[(model, name)] = sae_evaluation.invariant_fraction(w, m, basis=basis).cpu()

fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.4))
for ax, model in zip(axes, saes.BASE_MODELS):
    edges = np.linspace(-1, 1, 41)
    for name in ("equivariant", "regular"):
        ax.hist(scores[(model, name)][live[(model, name)]].numpy(), bins=edges, alpha=0.55, label=f"{name} SAE")
    ax.axvline(invariance_threshold, color="k", ls="--", lw=1, label=f"threshold {invariance_threshold:g}")
    ax.set_title(f"{model.upper()}, K = {feature_k} (live features)")
    ax.set_xlabel("cos(d, M d) inside the activations' span"), ax.set_ylabel("number of features")
    ax.legend(fontsize=7)
fig.tight_layout()
esae.figures.show(fig, "fig-05-scores", f"How the dictionary vectors move under M: cos(d, Md) inside the "
                  f"activations' span for the live features of the equivariant and the regular SAE (K = {feature_k}); "
                  f"right of the dashed line ({invariance_threshold:g}) a feature counts as invariant.")

# %%
classified = {}
rows = ("| base model | SAE | live features | invariant | equivariant | median cos(d, Md) "
        "| agreement with $w_{+1} \\ge 1/2$ |\n|---|---|---|---|---|---|---|\n")
for (model, name), s_ in scores.items():
    alive = live[(model, name)]
    inv = sae_evaluation.classify_features(s_, invariance_threshold) & alive
    classified[(model, name)] = inv
    n_live = int(alive.sum())
    agree = float((inv[alive] == (fractions[(model, name)][alive] >= 0.5)).float().mean()) if n_live else float("nan")
    rows += (f"| {model} | {name} | {n_live} | {int(inv.sum())} ({int(inv.sum()) / max(n_live, 1):.0%}) "
             f"| {n_live - int(inv.sum())} | {float(s_[alive].median()) if n_live else float('nan'):.2f} | {agree:.0%} |\n")
display(Markdown(rows + "\n" + ", ".join(f"{m.upper()} activations span {spans[m]} of 256 dimensions (99.9 % of the "
                                         "variance)" for m in saes.BASE_MODELS) + "."))

# %% [markdown]
# ## What the features draw
#
# A dictionary vector lives in activation space; to *see* it we push it through the base model's
# decoder. For feature $d$ with typical magnitude $a$ (its mean value when active on held-out
# images) we draw $\mathrm{dec}(M^p(b + a\,d)) - \mathrm{dec}(M^p b)$ for $p = 0, 1, 2, 3$, where
# $b$ is the SAE's decoder bias: what the feature adds to the picture, in each orientation the
# equivariant SAE can produce (red: ink added, blue: ink removed). Next to it, the held-out image
# that activates the feature most. Shown are the most frequently active invariant and equivariant
# features of the equivariant SAE at K = `feature_k` — the paper's Figure 1, drawn from the model
# (one figure per base model).

# %% tags=["hide-input"]
drawn, drawn_pictures = {}, {}
for model in saes.BASE_MODELS:
    sae = trained[model][("equivariant", feature_k)].sae
    canonical_acts = eval_acts[model][:, 0]
    stats = sae_evaluation.latent_statistics(sae, canonical_acts)
    inv = classified[(model, "equivariant")]
    chosen = []
    for want_invariant in (True, False):
        pool = torch.nonzero((inv == want_invariant) & (stats["frequency"] > 0)).flatten()
        order = pool[stats["frequency"][pool].argsort(descending=True)]
        chosen += [(int(j), want_invariant) for j in order[:n_features_shown]]
    if not chosen:
        print(f"{model}: no active features to draw")
        continue
    latents = [j for j, _ in chosen]
    pictures = sae_evaluation.feature_images(sae, nets[model].decode, latents, stats["mean_active"][latents])
    examples = orbit_images[:, 0][stats["top_row"][latents]]  # canonical images, the rows of canonical_acts
    labels = [f"{'inv' if flag else 'equi'} #{j}\ncos {float(scores[(model, 'equivariant')][j]):.2f}"
              for j, flag in chosen]
    drawn[model], drawn_pictures[model] = chosen, pictures
    fig = esae.plots.feature_grid(examples, pictures, labels, ["top image"] + [f"$M^{p}$" for p in range(4)])
    kinds = " and ".join(k for k, want in (("invariant (inv)", True), ("equivariant (equi)", False))
                         if any(flag == want for _, flag in chosen))
    esae.figures.show(fig, f"fig-05-features-{model}", f"{model.upper()}: the most frequently active {kinds} "
                      f"features of the equivariant SAE at K = {feature_k}. Left: the "
                      "held-out image that activates the feature most; then what the feature adds to the base "
                      "model's picture, $\\mathrm{dec}(M^p(b + a\\,d)) - \\mathrm{dec}(M^p b)$, for p = 0..3 (red: "
                      "ink added, blue: ink removed).")

# %% [markdown]
# How to read the grid: an invariant feature has $M d \approx d$ inside the activations' span, so
# one might expect its four pictures to be nearly the same — it would stand for *what* is in the
# image, whatever the orientation — while an equivariant feature's pictures turn with $p$, as $M$
# carries it to the feature of the rotated image. But a picture is the decoder's response to
# $M^p(b + a\,d)$, not to $d$ alone: the bias $b$ turns with $p$ and the decoder is non-linear, so
# the ink a feature adds depends on the orientation of everything around it. How much the pictures
# actually change with $p$, per feature shown:

# %% tags=["remove-input"]
def picture_change(pics: torch.Tensor) -> tuple[float, float]:
    """Mean over p = 1..3 of ‖pic_p − pic_0‖ / ‖pic_0‖, and of ‖pic_p − rot^p(pic_0)‖ / ‖pic_0‖."""
    side = int(round((pics[0].numel()) ** 0.5))
    pics = pics.reshape(pics.shape[0], side, side)  # (p, H, W), whatever shape the decoder returns
    norm = pics[0].norm().clamp_min(1e-12)
    same = float(np.mean([float((pics[p] - pics[0]).norm() / norm) for p in range(1, 4)]))
    turned = float(np.mean([float((pics[p] - esae.groups.rotate(pics[0], p)).norm() / norm) for p in range(1, 4)]))
    return same, turned


change = {(model, j, flag): picture_change(drawn_pictures[model][i]) for model in drawn
          for i, (j, flag) in enumerate(drawn[model])}
rows = "| base model | feature | class | change with p | change against the turned p = 0 picture |\n|---|---|---|---|---|\n"
for (model, j, flag), (same, turned) in change.items():
    rows += f"| {model} | #{j} | {'invariant' if flag else 'equivariant'} | {same:.0%} | {turned:.0%} |\n"
inv_change = [c[0] for (_, _, flag), c in change.items() if flag]
equi = [c for (_, _, flag), c in change.items() if not flag]
if equi:
    turns = sum(turned < same for same, turned in equi)
    equi_text = (f" The equivariant features' pictures differ from their p = 0 picture by "
                 f"{min(c[0] for c in equi):.0%}–{max(c[0] for c in equi):.0%}, and from that picture turned by p "
                 f"quarter turns by {min(c[1] for c in equi):.0%}–{max(c[1] for c in equi):.0%}: "
                 + ("all of them turn with p, as M carries them to the rotated image's feature." if turns == len(equi)
                    else "none of them turns with p the way the image does." if turns == 0
                    else f"{turns} of {len(equi)} are closer to the turned picture (they turn with p)."))
else:
    equi_text = ""
if inv_change:
    stable = sum(c < 0.25 for c in inv_change)
    verdict = (f"{stable} of the {len(inv_change)} invariant features shown keep their picture within 25 % across p; "
               f"their pictures change by {min(inv_change):.0%}–{max(inv_change):.0%} (relative L2 to the p = 0 "
               "picture). " + ("So for these features the rule cos(d, Md) ≥ threshold, measured in activation space, "
                               "does not make the drawn picture invariant." if stable < len(inv_change) else
                               "Their pictures are nearly the same, as the rule suggests."))
else:
    verdict = (f"The cos(d, Md) ≥ {invariance_threshold:g} rule finds no live invariant feature in the equivariant SAE "
               f"at K = {feature_k} (the table above), so only equivariant features are drawn.")
display(Markdown(rows + "\n" + verdict + equi_text))

# %% [markdown]
# ## The sparsity/reconstruction frontier
#
# Every SAE is evaluated on held-out images in all four orientations (`n_eval` images × 4; $p$ is
# the rotation relative to each orbit's canonical member):
#
# - **L0**: non-zero latents per input ($\le K$; the ReLU after TopK can zero some);
# - **L1**: the latents' L1 norm (decoder rows have unit norm, so this is comparable across SAEs);
# - **dead**: the fraction of latents that never fire on these inputs;
# - **explained variance** of the activations, $1 - \sum\lVert\psi - \hat\psi\rVert^2 / \sum\lVert\psi - \bar\psi\rVert^2$;
# - **spliced MSE**: the base model's image-reconstruction error (per pixel, against the input
#   image) when its activations are replaced by the SAE's reconstruction — $M^p D(E(\cdot))$ for
#   the equivariant SAE, $D(E(\cdot))$ for the invariant one, which thus returns the canonical
#   activation whatever the orientation.
#
# The base model's own reconstruction error is the floor. The table lists every number;
# {numref}`fig-05-frontier` plots the frontier.

# %%
metrics, base_mse = {}, {}
powers = torch.arange(4).repeat(n_used)  # row i*4 + p holds rotation p of image i
flat_images = orbit_images.reshape(-1, *eval_images.shape[1:])
for model in saes.BASE_MODELS:
    acts = eval_acts[model].reshape(-1, eval_acts[model].shape[-1])
    base_mse[model] = sae_evaluation.spliced_mse(nets[model].decode, acts.to(dev), flat_images.to(dev))
    for (name, k), result in trained[model].items():
        metrics[f"{model}/{name}/k{k}"] = sae_evaluation.evaluate(result.sae, acts, powers, decode=nets[model].decode,
                                                        images=flat_images)

rows = "| base model | SAE | K | L0 | L1 | dead | explained variance | spliced MSE |\n|---|---|---|---|---|---|---|---|\n"
for key, v in metrics.items():
    model, name, k = key.split("/")
    rows += (f"| {model} | {name} | {k[1:]} | {v['l0']:.1f} | {v['l1']:.2f} | {v['dead']:.1%} "
             f"| {v['explained_variance']:.3f} | {v['spliced_mse']:.5f} |\n")
display(Markdown(rows + "\n" + ", ".join(f"{m.upper()} without an SAE: spliced MSE {base_mse[m]:.5f}"
                                         for m in saes.BASE_MODELS)))

# %%
points = {model: {name: [(k, metrics[f"{model}/{name}/k{k}"]["spliced_mse"], metrics[f"{model}/{name}/k{k}"]["l1"])
                         for k in ks] for name in saes.SAE_NAMES} for model in saes.BASE_MODELS}
fig = esae.plots.frontier_plot(points, reference=base_mse)
esae.figures.show(fig, "fig-05-frontier", "Sparsity against reconstruction of every SAE (the paper's Figure 4): "
                  "L1 norm of the latents against the spliced reconstruction MSE, one point per K (larger markers: "
                  "larger K); dashed: the base model without an SAE. Lower left is better.")

# %% [markdown]
# ## What $M$ adds: invariant vs equivariant
#
# The invariant and the equivariant SAE share encoder, decoder and latents (identical L0, L1 and
# dead latents); they differ only in whether $M^p$ is applied to the reconstruction. The gap between
# their reconstructions is the paper's evidence that $M$ matters:

# %% tags=["remove-input"]
rows = ("| base model | K | spliced MSE invariant | spliced MSE equivariant | ratio "
        "| explained variance invariant | explained variance equivariant |\n|---|---|---|---|---|---|---|\n")
gap = {}
for model in saes.BASE_MODELS:
    for k in ks:
        inv, eq = metrics[f"{model}/invariant/k{k}"], metrics[f"{model}/equivariant/k{k}"]
        gap[(model, k)] = inv["spliced_mse"] / eq["spliced_mse"]
        rows += (f"| {model} | {k} | {inv['spliced_mse']:.5f} | {eq['spliced_mse']:.5f} | {gap[(model, k)]:.1f}× "
                 f"| {inv['explained_variance']:.3f} | {eq['explained_variance']:.3f} |\n")
display(Markdown(rows))

# %% [markdown]
# ## Error bars: the frontier over seeds
#
# Every number above comes from one seed. The paper reports mean ± std, and a claim about two SAEs
# is only as good as the gap between them against how much a re-run moves it. Chapter 3 trained
# base models on `n_seeds` independent seeds (its parameter); for each extra seed this chapter
# trains all the SAEs again on that seed's base models, with that seed's $M$ (chapter 4's warm
# start) and this chapter's seed moved by the same offset, and evaluates them on that seed's own
# held-out images, exactly as above. (The other layout, at the end of the chapter, has seed 0 only.)


# %% tags=["hide-input"]
def evaluate_all(base_cfgs: dict, trained_sets: dict, nets_: dict) -> tuple[dict, dict]:
    """Frontier metrics of every SAE of ``trained_sets`` on the held-out orbits of the base models
    ``base_cfgs`` (their layout and seed): ``{"<model>/<sae>/k<K>": metrics}``, and each base model's
    spliced MSE without an SAE on the same images (the floor), ``{model: mse}``."""
    lay = base_cfgs["mlp"].layout
    held = heldout_set(base_cfgs["mlp"])[:n_used]
    cfg = pipeline.sae_configs(sae_parameters, lay)[("invariant", ks[0])]
    rot = sae_training.target_rotation(held, cfg.canonical)
    imgs = sae_training.canonical_orbit(torch.stack([esae.groups.rotate(held.images, p) for p in range(4)], 1), rot)
    flat_imgs = imgs.reshape(-1, *held.images.shape[1:])
    out, floor = {}, {}
    for model in saes.BASE_MODELS:
        acts = sae_training.canonical_orbit(sae_training.orbit_acts(nets_[model], held.images, device=dev), rot)
        acts = acts.reshape(-1, acts.shape[-1])
        floor[model] = sae_evaluation.spliced_mse(nets_[model].decode, acts.to(dev), flat_imgs.to(dev))
        for (name, k), result in trained_sets[model].items():
            out[f"{model}/{name}/k{k}"] = sae_evaluation.evaluate(result.sae, acts, powers, decode=nets_[model].decode,
                                                        images=flat_imgs)
    return out, floor


seed_metrics, seed_base_mse = {seed_list[0]: metrics}, {seed_list[0]: base_mse}
seeds_start = time.perf_counter()
for i, s in enumerate(seed_list[1:], start=1):
    cfg_s = pipeline.seed_configs(upstream["03_base_models"], upstream["04_fitting_m"], sae_parameters, i, layout)
    nets_s = pipeline.base_models(cfg_s.base, dev)
    trained_s = {model: pipeline.saes(cfg_s.base[model], cfg_s.saes, cfg_s.fits, dev) for model in saes.BASE_MODELS}
    seed_metrics[s], seed_base_mse[s] = evaluate_all(cfg_s.base, trained_s, nets_s)
    del nets_s, trained_s
seeds_seconds = time.perf_counter() - seeds_start
frontier_stats = {key: {m: esae.beyond.mean_std([seed_metrics[s][key][m] for s in seed_list])
                        for m in ("l1", "spliced_mse", "explained_variance", "l0")} for key in metrics}
if len(seed_list) > 1:
    rows = (f"| base model | SAE | K | L1 | spliced MSE | explained variance |\n|---|---|---|---|---|---|\n")
    for key, st in frontier_stats.items():
        model, name, k = key.split("/")
        rows += (f"| {model} | {name} | {k[1:]} | {esae.beyond.fmt(st['l1'], 2)} | {esae.beyond.fmt(st['spliced_mse'], 5)} "
                 f"| {esae.beyond.fmt(st['explained_variance'], 3)} |\n")
    display(Markdown(f"Mean ± std over {len(seed_list)} seeds ({', '.join(map(str, seed_list))}); the extra seeds took "
                     f"{seeds_seconds:.0f} s here (SAE training when first run; nothing but evaluation when cached).\n\n"
                     + rows))
else:
    display(Markdown("One seed under this profile: no error bars (the verdicts below use the point estimates)."))

# %% [markdown]
# ## The paper's RESULT 3, checked
#
# The paper reports (RESULT 3, Figure 4): (a) for small K the equivariant SAE matches the wide
# SAE's reconstruction; (b) regular SAEs generally have sparser latents (lower L1); (c) the
# invariance objective makes the SAE less sensitive to K — a smaller range of L1 across K than the
# two-layer SAE; (d) $M$ improves the reconstruction of the invariant SAE; and, its headline, (e)
# equivariant SAEs lag behind (here: the equivariant SAE reconstructs worse than the regular SAE at
# most K). Each claim, computed on this run. Claim (a) compares the error each SAE *adds* to the base model's own (spliced MSE minus
# the dashed line of the figure): every SAE but the invariant one sits close to that floor, so a
# ratio of the spliced MSEs themselves would be near 1 whatever the SAEs do.

# %% tags=["remove-input"]
k_small = min(ks)
# the same list the results file and summary hold; with several seeds, beyond two standard errors
verdicts = esae.verdicts.compute("05_equivariant_sae", {**metrics, "seed_metrics": seed_metrics, "base_mse": base_mse,
                                                        "seed_base_mse": seed_base_mse})
display(Markdown(esae.verdicts.markdown(verdicts)))

# %% [markdown]
# ## Under the other reading of the dataset
#
# Everything above uses the **upright** layout, the paper's reading. The same SAEs, trained the same
# way on base models and $M$ trained on the **independent** layout (each quadrant in its own random
# orientation; the invariant SAE's target is then the smallest-label-code member of each orbit),
# give the numbers below (computed in this run, cached): what depends on the reading.


# %% tags=["hide-input"]
def frontier(lay: str, trained_sets: dict, nets_: dict) -> tuple[dict, dict]:
    """Frontier metrics of every SAE on held-out orbits of layout ``lay``, and the frontier claims."""
    out, floor = evaluate_all(pipeline.base_model_configs(upstream["03_base_models"], lay), trained_sets, nets_)
    return out, frontier_claims(out, floor)


def frontier_claims(out: dict, floor: dict) -> dict:
    """RESULT 3's claims (a)–(e) per base model, as tested above, on a dict of frontier metrics and the
    base models' own spliced MSE ``floor`` (claim (a) compares the error the SAEs add to it)."""
    verdicts = {}
    for model in saes.BASE_MODELS:
        get = lambda name, k, key: out[f"{model}/{name}/k{k}"][key]  # noqa: E731
        rng = {n: max(get(n, k, "l1") for k in ks) - min(get(n, k, "l1") for k in ks) for n in ("equivariant", "two_layer")}
        added = {n: get(n, k_small, "spliced_mse") - floor[model] for n in ("equivariant", "wide")}
        verdicts[model] = {
            "a": added["equivariant"] <= 1.25 * added["wide"],
            "b": sum(get("regular", k, "l1") < get("equivariant", k, "l1") for k in ks) > len(ks) / 2,
            "c": rng["equivariant"] < rng["two_layer"],
            "d": all(get("equivariant", k, "spliced_mse") < get("invariant", k, "spliced_mse") for k in ks),
            "e": sum(get("equivariant", k, "spliced_mse") > get("regular", k, "spliced_mse") for k in ks) > len(ks) / 2,
        }
    return verdicts


by_layout = {layout: (metrics, frontier_claims(metrics, base_mse))}
if compare_layouts:
    start = time.perf_counter()
    base_other = pipeline.base_model_configs(upstream["03_base_models"], other_layout)
    nets_other = pipeline.base_models(base_other, dev)
    trained_other = {model: pipeline.saes(base_other[model], pipeline.sae_configs(sae_parameters, other_layout),
                                          fit_configs, dev) for model in saes.BASE_MODELS}
    by_layout[other_layout] = frontier(other_layout, trained_other, nets_other)
    other_seconds = time.perf_counter() - start
    rows = ("| layout | base model | EV regular | EV invariant | EV equivariant | spliced MSE invariant / equivariant "
            f"| claims (a)–(e) hold |\n|---|---|---|---|---|---|---|\n")
    for lay, (met, ver) in by_layout.items():
        for model in saes.BASE_MODELS:
            g = lambda name: met[f"{model}/{name}/k{k_mid}"]  # noqa: E731
            rows += (f"| {lay} | {model} | {g('regular')['explained_variance']:.3f} | {g('invariant')['explained_variance']:.3f} "
                     f"| {g('equivariant')['explained_variance']:.3f} | "
                     f"{g('invariant')['spliced_mse'] / g('equivariant')['spliced_mse']:.2f}× | "
                     + ", ".join(f"({c}) {'yes' if v else 'no'}" for c, v in ver[model].items()) + " |\n")
    display(Markdown(f"K = {k_mid}, {n_used} held-out images × 4 rotations of each layout (EV: explained variance of "
                     f"the rotated activations). The {other_layout} models and SAEs took {other_seconds:.0f} s here "
                     "(nothing, when cached).\n\n" + rows))

# %% [markdown]
# ## What this run showed

# %% tags=["remove-input"]
l1_ranges = {model: {n: max(metrics[f"{model}/{n}/k{k}"]["l1"] for k in ks) - min(metrics[f"{model}/{n}/k{k}"]["l1"] for k in ks)
                     for n in ("equivariant", "two_layer")} for model in saes.BASE_MODELS}
results_path = esae.results.write_results(profile, "05_equivariant_sae", {
    **metrics, "layout": layout, "l1_range": l1_ranges, "seeds": seed_list,
    "seed_metrics": {str(s): {key: {m: v[m] for m in ("l0", "l1", "dead", "explained_variance", "spliced_mse")}
                              for key, v in seed_metrics[s].items()} for s in seed_list},
    "base_mse": base_mse, "seed_base_mse": {str(s): seed_base_mse[s] for s in seed_list},
    "mean_std": frontier_stats,
    "layouts": {lay: {"metrics": met, "claims": ver} for lay, (met, ver) in by_layout.items()},
    "verdicts": verdicts})
inv_share, reg_share = ({model: int(classified[(model, name)].sum()) / max(int(live[(model, name)].sum()), 1)
                         for model in saes.BASE_MODELS} for name in ("equivariant", "regular"))


def m_effect(model: str) -> str:
    lo, hi = min(gap[(model, k)] for k in ks), max(gap[(model, k)] for k in ks)
    if lo > 1:
        return f"$M$ lowers the invariant SAE's spliced MSE {lo:.1f}–{hi:.1f}×"
    return f"$M$ does not consistently lower the invariant SAE's spliced MSE (invariant/equivariant ratio {lo:.2f}–{hi:.2f})"


display(Markdown(
    f"Under the **{profile}** profile, {sum(len(v) for v in trained.values())} SAEs ({len(ks)} values of K × 5 kinds × "
    f"2 base models) were trained or loaded in {time.perf_counter() - chapter_start:.0f} s of chapter time. "
    + " ".join(
        f"On the {model.upper()}, {m_effect(model)} (at K = {k_mid} the equivariant SAE explains "
        f"{metrics[f'{model}/equivariant/k{k_mid}']['explained_variance']:.3f} of the variance of the rotated "
        f"activations, the regular SAE {metrics[f'{model}/regular/k{k_mid}']['explained_variance']:.3f}); "
        f"{inv_share[model]:.0%} of the equivariant SAE's live features at K = {feature_k} are invariant by the "
        f"cos(d, Md) ≥ {invariance_threshold:g} rule, against {reg_share[model]:.0%} of the regular SAE's."
        for model in saes.BASE_MODELS)
    + (f" Over {len(seed_list)} seeds (base model, M and SAEs re-seeded), the equivariant SAE's spliced MSE at K = {k_mid} is "
       + ", ".join(f"{esae.beyond.fmt(frontier_stats[f'{m}/equivariant/k{k_mid}']['spliced_mse'], 5)} ({m.upper()})"
                   for m in saes.BASE_MODELS)
       + " against the regular SAE's " + ", ".join(f"{esae.beyond.fmt(frontier_stats[f'{m}/regular/k{k_mid}']['spliced_mse'], 5)}"
                                                   for m in saes.BASE_MODELS)
       + ", mean ± std; the verdicts below count a claim only where it holds beyond two standard errors."
       if len(seed_list) > 1 else "")
    + f" The headline numbers are in `results/{profile}/{results_path.name}`.\n\n"
    + esae.verdicts.conclusion(verdicts)))
