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
# # Probing: are the equivariant SAE's features more useful?
#
# Chapter 5 trained four kinds of SAE on the base autoencoders' activations: a regular TopK SAE, a
# wide one with $|G| = 4$ times the latents, one with a two-layer encoder, and the adaptively
# equivariant SAE (an invariant two-layer SAE plus the matrix $M$ of chapter 4). The paper's second
# result {cite}`erdogan2025equivariant` is that the equivariant SAE's features are *more useful*:
# small probes trained on a handful of its latents, or on what those latents reconstruct, solve the
# dataset's 180 binary tasks better than the same probes on the other SAEs.
#
# You will learn:
#
# - the sparse-probing protocol of the paper (after Kantamneni et al.): per task, keep the $L$
#   latents whose class means differ most, fit kNN, logistic-regression and XGBoost probes on them,
#   and score F1 on held-out images;
# - what a *truncated reconstruction* is, and how the equivariant SAE's reconstruction of a probed
#   image is formed;
# - how the four SAEs compare on the task groups S, SO, SP and SPO (the paper's Figures 3 and 7),
#   and which of the paper's claims this run reproduces — and why some do not.
#
# The code is `esae.probing`; it works on any arrays (latents, labels), so it applies to other SAEs
# and tasks unchanged.

# %% tags=["parameters"]
profile: str = "default"  # parameter profile that produced this page: smoke | default | paper
seed: int = 0  # seed of the probing sets and the probes
device: str = "auto"  # auto | cpu | cuda (the probes themselves run on the CPU)
n_train: int = 2000  # probing-set images the probes are fitted on (at least 20)
n_test: int = 1000  # held-out images the F1 scores are measured on (at least 20)
figure3_ks: list = [8, 16, 32]  # TopK values of Figure 3 (CNN base model, truncation length 32)
figure3_tasks_per_group: int = 0  # tasks of each group probed for Figure 3, evenly spread (0 means all 180)
figure7_panels: list = ["mlp/L8", "cnn/L8", "mlp/L32"]  # Figure 7 variants, each model/L plus truncation length
figure7_ks: list = [8, 32]  # TopK values of the Figure 7 variants
figure7_tasks_per_group: int = 0  # tasks of each group probed for the Figure 7 variants (0 means all)
compared_saes: list = ["regular", "wide", "two_layer", "equivariant"]  # SAEs compared (chapter 5 names)
probes: list = ["knn", "logreg", "xgboost"]  # probes fitted on every task
xgb_max_bin: int = 256  # XGBoost histogram bins per feature (256 is XGBoost's default)
n_jobs: int = -1  # parallel workers over tasks (-1 means every core)

# %%
import time

import numpy as np
import torch
from IPython.display import Markdown, display

import esae
from esae import autoencoders, probing, saes, shapes
from esae.probing import GROUP_KEYS, GROUPS, result_key

esae.params.check_profile(profile)
dev = esae.runtime.resolve_device(device)
esae.runtime.seed_everything(seed)
config = probing.ProbingConfig(
    n_train=n_train, n_test=n_test, figure3_ks=figure3_ks, figure3_tasks_per_group=figure3_tasks_per_group,
    figure7_panels=figure7_panels, figure7_ks=figure7_ks, figure7_tasks_per_group=figure7_tasks_per_group,
    saes=compared_saes, probes=probes, xgb_max_bin=xgb_max_bin, n_jobs=n_jobs, seed=seed)
PANELS = config.panels()  # Figure 3's panel first, then the Figure 7 variants
FIG3 = PANELS[0]
chapter_start = time.perf_counter()

# %% [markdown]
# ## The tasks and the probing sets
#
# The 180 tasks are those of chapter 2 (appendix C.1 of the paper): does the image contain shape
# $s$ anywhere (**S**, 8 tasks), in orientation $o$ (**SO**, 28), at position $p$ (**SP**, 32), at
# $p$ in orientation $o$ (**SPO**, 112)? Only the S tasks are invariant to rotating the image.
#
# The probes are fitted on a *probing set* of freshly generated images and scored on a separate
# *test set*. Both are orbit-disjoint from the images the base models and SAEs were trained on,
# and from each other: no image of one is a rotation of an image of another. The paper does not
# state its sizes; ours are below.

# %%
train_set, test_set = probing.probing_sets(profile, config.n_train, config.n_test, config.seed)
tasks = shapes.probing_tasks()
task_groups = [t.group for t in tasks]
labels_train = shapes.task_labels(train_set, tasks)
labels_test = shapes.task_labels(test_set, tasks)
rows = "| group | tasks | positive share, probing set | positive share, test set | fewest test positives |\n|---|---|---|---|---|\n"
for g in GROUPS:
    cols = [i for i, t in enumerate(task_groups) if t == g]
    rows += (f"| {g} | {len(cols)} | {labels_train[:, cols].mean():.3f} | {labels_test[:, cols].mean():.3f} | "
             f"{int(labels_test[:, cols].sum(0).min())} |\n")
subsets = [f"{p.name} probes {len(probing.select_tasks(task_groups, p.tasks_per_group))} of them "
           f"({p.tasks_per_group} per group, evenly spread; its 'all' averages are over those)"
           for p in PANELS if p.tasks_per_group]
display(Markdown(f"**{len(train_set):,} probing images** (the probes' training split) and "
                 f"**{len(test_set):,} test images**, {len(tasks)} tasks"
                 + (f"; to fit this profile's time budget, {'; '.join(subsets)}" if subsets else "")
                 + ".\n\n" + rows))

# %% [markdown]
# The tasks are unbalanced (the paper: about 58 % negatives for S, 87–89 % for SO and SP, 97 % for
# SPO), which is why the score is the F1 of the positive class rather than accuracy: a probe that
# always answers "no" has accuracy 0.97 on an SPO task but F1 = 0.
#
# ## The protocol
#
# For every task and every probed input (`esae.probing.probe_scores`):
#
# 1. **Truncate.** On the probing set only, compute each latent's mean over the positive and over
#    the negative images, and keep the $L$ latents with the largest absolute difference
#    (`top_latents`). $L \in \{8, 32\}$. Different tasks keep different latents.
# 2. **Form the input.** Either (a) the $L$ truncated latents themselves, or (b) the *truncated
#    reconstruction* $\hat x = \sum_{i \in \text{top } L} z_i\, d_i + b_{\text{dec}}$ — the SAE's
#    decoder applied to only those $L$ latents, a 256-dimensional vector in activation space.
#    The base activations themselves, truncated to $L$ neurons the same way, are the upper bound.
# 3. **Fit three probes** (appendix C.1): kNN with 16 neighbours under the Euclidean distance;
#    logistic regression with an L2 penalty $\lambda = 10^{-4}$ per sample (features standardised);
#    XGBoost with 100 trees of depth 6, learning rate 0.3, L2-regularised leaves and the histogram
#    method. F1 is measured on the test set.
# 4. **Summarise.** Per task, the best of the three probes; averaged over each task group and over
#    all 180 tasks. A task whose positive or negative class is empty in either split would be
#    reported and left out of the averages (none is, at these sizes: see the table above).
#
# A look at step 1 for one task and one SAE: the class-mean gaps of the CNN's regular SAE
# ($K = 16$ where trained) on the task S(triangle), largest first.

# %%
nets = autoencoders.load_base_models(profile, dev)
example_model, example_L = FIG3.model, FIG3.L
example_k = 16 if 16 in FIG3.ks else FIG3.ks[0]
example_sae = saes.load_saes(profile, example_model, dev)[("regular", example_k)]
acts_example = autoencoders.activations(nets[example_model], train_set.images, device=dev).float().cpu()
z_example = probing.encode(example_sae, acts_example)
s_tasks = [i for i, t in enumerate(tasks) if t.group == "S"]
task_index = next((i for i in s_tasks if shapes.SHAPES[tasks[i].shape] == "triangle"), s_tasks[0])
gap = probing.class_mean_gap(z_example, labels_train[:, [task_index]])[0]
order = np.argsort(-gap, kind="stable")
active = int((z_example != 0).any(0).sum())
display(Markdown(
    f"Of the {z_example.shape[1]:,} latents, {active:,} fire at least once on the probing set. For "
    f"{tasks[task_index].name}, the 5 largest gaps are "
    + ", ".join(f"latent {i}: {gap[i]:.3f}" for i in order[:5])
    + f"; the {example_L}th largest is {gap[order[example_L - 1]]:.3f} and the median over all latents "
    f"{np.median(gap):.3f}."))

# %% [markdown]
# ## How the equivariant SAE's reconstruction is formed
#
# The equivariant SAE reconstructs the activation of a rotated image $g^p c$ as
# $M^p D(E(\psi(g^p c)))$: its invariant encoder maps the whole orbit of $c$ to one code, its
# decoder draws the activation of the orbit's *canonical* image $c$, and $M^p$ turns that into the
# orientation of the input. A probed image $x$ is a freshly generated image, in a random
# orientation; chapter 5 fixes the canonical image of every orbit as the member with the smallest
# label code (the generated image itself cannot serve: every rotation of a generated image is an
# equally likely generated image, so no encoder could tell which rotation to undo). So for each
# probed image we compute, from its labels, the $p$ with $x = g^p c$
# (`esae.probing.rotations_from_canonical`), and **its reconstruction is $M^p D(E(\psi(x)))$;
# its truncated reconstruction is $M^p\big(\sum_{i \in \text{top } L} z_i d_i + b\big)$.** This is
# the equivariant SAE exactly as defined: the reconstruction that approximates $\psi(x)$.
#
# Two things follow. First, $p$ is *side information*: two bits per image, derived from the labels
# through the canonicalisation, that enter the equivariant SAE's reconstruction but not its
# latents, and that no other SAE's probe receives. Second, the equivariant and invariant SAEs share
# their encoder, so their latents are identical (the latent probes are the same); their
# reconstructions differ only by $M^p$. The check below confirms both on this run's SAEs, and that
# the $p$ computed from the labels is the one the SAE was trained with: $M^p D(E(\psi(x)))$ should
# explain $\psi(x)$ far better than the canonical reconstruction $D(E(\psi(x)))$ does.

# %%
sae_example = saes.load_saes(profile, example_model, dev)
eq_sae, inv_sae = sae_example[("equivariant", example_k)], sae_example[("invariant", example_k)]
same_latents = bool(np.array_equal(probing.encode(eq_sae, acts_example[:512]), probing.encode(inv_sae, acts_example[:512])))
p_probe = probing.rotations_from_canonical(train_set)
with torch.no_grad():
    canon = eq_sae.decode(eq_sae.encode(acts_example.to(dev)))
    recon_p = eq_sae.transform(canon, torch.as_tensor(p_probe)).float().cpu()
    recon_0 = canon.float().cpu()
r2_p = esae.metrics.r2_pooled(acts_example, recon_p)
r2_0 = esae.metrics.r2_pooled(acts_example, recon_0)
display(Markdown(
    f"On the probing set ({example_model}, K = {example_k}): the rotations $p$ from the canonical image are "
    f"{', '.join(f'{q}: {np.mean(p_probe == q):.0%}' for q in range(4))} of the images; "
    f"equivariant and invariant latents identical: **{same_latents}**. "
    f"R² of $M^p D(E(\\psi(x)))$ against $\\psi(x)$: **{r2_p:.3f}**; of the canonical reconstruction "
    f"$D(E(\\psi(x)))$ (the invariant SAE, no $M$): **{r2_0:.3f}**."))
assert same_latents
del sae_example, eq_sae, inv_sae, canon

# %% [markdown]
# ## Running the probes
#
# Per base model, per truncation length $L$, per SAE and per $K$: two inputs × 180 tasks × the
# probes, plus the base activations — thousands of probe fits. They run in parallel over tasks, and
# every (input, $L$, probe) result is cached by a fingerprint of the arrays, so re-running this
# chapter costs only the hashing.

# %%
scores: dict[str, probing.ProbeScores] = {}
timings = {}
for model in dict.fromkeys(p.model for p in PANELS):
    inputs = probing.model_inputs(profile, model, train_set, test_set, dev)
    for panel in (p for p in PANELS if p.model == model):
        start = time.perf_counter()
        scores.update(probing.probe_panel(inputs, panel, config))
        timings[panel.name] = time.perf_counter() - start
    del inputs
summaries = {key: probing.summarize(s) for key, s in scores.items()}
best = {key: s["best"] for key, s in summaries.items()}
n_fits = sum(len(s.probes) * (len(s.groups) - len(s.degenerate)) for s in scores.values())
n_cached = sum(c for s in scores.values() for c in s.cached.values())
n_runs = sum(len(s.cached) for s in scores.values())
cpu_seconds = sum(s.cpu_seconds for s in scores.values())
degenerate = {key: s.degenerate for key, s in scores.items() if s.degenerate}
display(Markdown(
    f"{len(scores)} probed inputs, {n_fits:,} probe fits ({n_cached} of {n_runs} (input, L, probe) results "
    f"from the cache), {cpu_seconds / 60:.1f} CPU-minutes of probe fitting; wall time per panel: "
    + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
    + f". Degenerate tasks: {'none' if not degenerate else degenerate}."))


# %%
def panel_scores(panel: probing.Panel, table=best):
    """``scores[input][k][sae] -> {group: F1}`` for one panel, the shape ``plots.probing_bars`` takes."""
    return {inp: {k: {name: table[result_key(panel.model, inp, panel.L, name, k)] for name in config.saes}
                  for k in panel.ks} for inp in probing.INPUTS}


def panel_figure(panel: probing.Panel, title: str):
    subset = f" ({len(scores[result_key(panel.model, 'activations', panel.L)].groups)} tasks)" if panel.tasks_per_group else ""
    return esae.plots.probing_bars(panel_scores(panel), best[result_key(panel.model, "activations", panel.L)],
                                   title=title + subset)


# %% [markdown]
# ## Figure 3: CNN, truncation length 32
#
# Top row: probes over the truncated latents; bottom row: over the truncated reconstructions.
# Each bar is the mean, over a task group, of the best probe's test F1; the hatched grey bar is the
# base activations truncated to the same $L$ (the same in every panel of a row, repeated for
# comparison, as in the paper).

# %%
fig = panel_figure(FIG3, f"Figure 3 — {FIG3.model.upper()} base model, truncation length L = {FIG3.L}, best probe per task")

# %% [markdown]
# ## Figure 7: the other truncation length and the MLP
#
# Appendix D of the paper repeats the comparison with $L = 8$ for both base models and with
# $L = 32$ for the MLP.

# %%
for panel in PANELS[1:]:
    panel_figure(panel, f"Figure 7 variant — {panel.model.upper()} base model, L = {panel.L}, best probe per task")

# %% [markdown]
# ## Which probe wins?
#
# The paper reports XGBoost as the best probe overall. Over every probed input of this run, the
# share of tasks on which each probe is the best, and the mean F1 of each probe on Figure 3's
# inputs:

# %%
wins = {p: 0 for p in config.probes}
for s in scores.values():
    for p in s.best_probe():
        if p is not None:
            wins[p] += 1
total_wins = sum(wins.values())
fig3_keys = [k for k in scores if k.startswith(f"{FIG3.model}/") and k.endswith(f"/L{FIG3.L}")]
per_probe = {name: {g: float(np.mean([summaries[k][name][g] for k in fig3_keys if summaries[k][name][g] is not None]))
                    for g in GROUP_KEYS} for name in (*config.probes, "best")}
esae.plots.probe_comparison(per_probe, title=f"Mean F1 of each probe over Figure 3's {len(fig3_keys)} inputs")
display(Markdown("Best probe per task, over all inputs: "
                 + ", ".join(f"**{p}** {100 * w / total_wins:.0f} %" for p, w in wins.items()) + "."))

# %% [markdown]
# ## Every number
#
# Mean F1 of the best probe per task, per task group, for every probed input (the content of
# `results/<profile>/06_probing.json`), followed by XGBoost alone — the probe of the paper's figures.

# %%
def number_table(table) -> str:
    out = "| model | L | input | SAE | K | " + " | ".join(GROUP_KEYS) + " |\n|---|---|---|---|---|" + "---|" * len(GROUP_KEYS) + "\n"
    for panel in PANELS:
        model, L = panel.model, panel.L
        act = table[result_key(model, "activations", L)]
        out += f"| {model} | {L} | activations | — | — | " + " | ".join(_fmt(act[g]) for g in GROUP_KEYS) + " |\n"
        for inp in probing.INPUTS:
            for k in panel.ks:
                for name in config.saes:
                    row = table[result_key(model, inp, L, name, k)]
                    out += f"| {model} | {L} | {inp} | {name} | {k} | " + " | ".join(_fmt(row[g]) for g in GROUP_KEYS) + " |\n"
    return out


def _fmt(v) -> str:
    return "—" if v is None else f"{v:.3f}"


display(Markdown("**Best probe per task**\n\n" + number_table(best)))
if "xgboost" in config.probes:
    display(Markdown("**XGBoost alone**\n\n" + number_table({k: s["xgboost"] for k, s in summaries.items()})))

# %% [markdown]
# ## The paper's claims, one by one
#
# RESULT 2 and appendix D make four claims. We test each on every panel this profile ran; a claim
# "holds" in a panel when it holds for every $K$ (and task group) it is stated for.

# %%
def f1_of(model, inp, L, name, k, group):
    return best[result_key(model, inp, L, name, k)][group]


others = [s for s in config.saes if s != "equivariant"]
one_layer = [s for s in ("regular", "wide") if s in config.saes]
claims = []
for p in PANELS:
    model, L, ks, panel = p.model, p.L, p.ks, p.name
    # 1. reconstructions: equivariant above regular and wide in every group and K
    margins = [f1_of(model, "reconstructions", L, "equivariant", k, g) - max(f1_of(model, "reconstructions", L, s, k, g) for s in one_layer)
               for k in ks for g in GROUP_KEYS]
    claims.append((panel, "1. reconstructions: equivariant > regular and wide, every group and K",
                   min(margins) > 0, f"smallest margin {min(margins):+.3f}, largest {max(margins):+.3f}"))
    # 2a. latents: equivariant best of the SAEs on S
    s_margin = [f1_of(model, "latents", L, "equivariant", k, "S") - max(f1_of(model, "latents", L, s, k, "S") for s in others)
                for k in ks]
    claims.append((panel, "2a. latents: equivariant best SAE on S", min(s_margin) > 0,
                   "margin per K " + ", ".join(f"{m:+.3f}" for m in s_margin)))
    # 2b. latents: equivariant drops on the orientation-dependent groups
    drops = [f1_of(model, "latents", L, "equivariant", k, "S") - np.mean([f1_of(model, "latents", L, "equivariant", k, g)
                                                                          for g in ("SO", "SP", "SPO")]) for k in ks]
    below = [np.mean([f1_of(model, "latents", L, "equivariant", k, g) - max(f1_of(model, "latents", L, s, k, g) for s in others)
                      for g in ("SO", "SP", "SPO")]) for k in ks]
    claims.append((panel, "2b. latents: equivariant drops on SO/SP/SPO (vs its S, and below other SAEs)",
                   min(drops) > 0 and max(below) < 0,
                   "S minus mean(SO, SP, SPO) per K " + ", ".join(f"{d:.3f}" for d in drops)
                   + "; vs best other SAE " + ", ".join(f"{b:+.3f}" for b in below)))
    # 3. two-layer SAE matches the equivariant one on reconstructions only at K = 32
    if "two_layer" in config.saes:
        gaps = {k: f1_of(model, "reconstructions", L, "equivariant", k, "all") - f1_of(model, "reconstructions", L, "two_layer", k, "all")
                for k in ks}
        high = max(ks)
        claims.append((panel, f"3. reconstructions: two-layer matches equivariant only at the largest K ({high})",
                       all(v > 0.02 for k, v in gaps.items() if k != high) and abs(gaps[high]) <= 0.02,
                       "equivariant − two-layer ('all') per K " + ", ".join(f"K={k}: {v:+.3f}" for k, v in gaps.items())))
rows = "| panel | claim | holds | measured |\n|---|---|---|---|\n" + "".join(
    f"| {p} | {c} | {'yes' if h else '**no**'} | {m} |\n" for p, c, h, m in claims)
display(Markdown(rows))

# %% [markdown]
# ## What this run showed

# %%
elapsed = time.perf_counter() - chapter_start
esae.results.write_results(profile, "06_probing", best)
display(Markdown(
    f"This run probed {len(scores)} inputs with {n_fits:,} probe fits in {elapsed / 60:.1f} minutes "
    f"({n_cached} of {n_runs} results came from the cache). Of the {len(claims)} claim checks, "
    f"{sum(h for _, _, h, _ in claims)} hold."))
