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
# # The rotated-shapes dataset
#
# The first paper {cite}`erdogan2025equivariant` studies networks trained on a synthetic dataset
# whose symmetry is known exactly: 64×64 images made of four 32×32 quadrants, each holding one of
# eight shapes. This chapter builds that dataset ({py:mod}`esae.shapes`) and the 180 binary probing tasks
# that chapter 6 uses to judge SAE features.
#
# You will learn:
#
# - the eight shapes, why two of them have only two distinct orientations, and how we drew them so
#   that rotating an image is *exactly* the same as re-drawing it from rotated labels;
# - how C4 acts on the labels: the shapes move one quadrant counter-clockwise and turn by 90°;
# - the four groups of probing tasks (S, SO, SP, SPO), which of them are invariant under rotation,
#   and how unbalanced they are — measured on generated data and compared with the paper.

# %% tags=["parameters"]
profile: str = "default"  # parameter profile that produced this page: smoke | default | paper
seed: int = 0  # seed for every random choice in the chapter
device: str = "auto"  # auto | cpu | cuda (this chapter computes on the CPU whatever is chosen)
layout: str = "upright"  # upright (the paper's reading: shapes upright, orientations from rotating the image) | independent
n_samples: int = 10000  # generated images on which the task balance is measured (at least 100)
n_show: int = 32  # sample images shown in the grid (1..128)
upstream: dict = {}  # chapter 3's parameters (its training-set size), injected by the book (esae.params.UPSTREAM)

# %%
import time

import numpy as np
import torch
from IPython.display import Markdown, display

import esae
from esae import shapes
from esae.groups import rotate as rotate_images
from esae.params import check_int, check_profile, check_run

check_profile(profile)
check_run("02_dataset", profile)  # refuse sizes other than the profile's under its name
upstream = upstream or esae.params.upstream_parameters("02_dataset", profile)  # run by hand: the profile's
esae.params.check_choice("layout", layout, shapes.LAYOUTS)
check_int("n_samples", n_samples, 100)
check_int("n_show", n_show, 1, 128)
esae.runtime.resolve_device(device)
esae.runtime.seed_everything(seed)
started = time.perf_counter()

# %% [markdown]
# ## Eight shapes, drawn once
#
# The paper's Figure 6 lists eight shapes, none of them rotation-invariant: a horizontal
# rectangle and a diagonal line, which a half turn maps onto themselves (two distinct
# orientations each), and six shapes with four. The paper does not name the six, so we chose
# them for being unmistakable at 32×32 pixels: a **triangle**, a **half disk**, an **L**, a
# **T**, an **arrow** and an open ring (**arc**, a "C"). Each points in one direction, so its
# orientation is visible at a glance, and no two share a silhouette: three are filled solids
# (triangle, half disk, and the rectangle), two are thin strokes (the diagonal and the arc), and
# three are assembled from bars (L, T, arrow), with straight and curved outlines on both sides.
#
# Every shape has one canonical sprite, drawn with OpenCV (anti-aliased, 1/16-pixel
# coordinates) in a 32×32 cell with a margin of about three pixels; orientation $o$ is that
# sprite turned $o$ times by 90° counter-clockwise with `torch.rot90` (for the two symmetric shapes
# we make the half-turn symmetry exact by taking the pixel-wise maximum of the sprite and its
# half turn, which only touches anti-aliasing rounding). {numref}`fig-02-shapes` is the counterpart
# of the paper's Figure 6:

# %%
bank = shapes.sprites()
fig = esae.plots.shape_table(bank, shapes.SHAPES, shapes.NUM_ORIENTATIONS)
esae.figures.show(fig, "fig-02-shapes", "The eight shapes in all four rotations (the paper's Figure 6); greyed "
                  "cells repeat an earlier orientation.")

# %% [markdown]
# The number of orientations is not declared but *measured*: rotate each canonical sprite by
# 0°, 90°, 180°, 270° and count the distinct pixel arrays. We also measure how far apart the
# shapes are: the smallest Euclidean pixel distance between a sprite and any sprite (in any
# orientation) of a *different* shape, relative to the norm of the sprite itself.

# %%
flat = bank.reshape(len(shapes.SHAPES), 4, -1)
measured_counts = [len({tuple(flat[s, k].tolist()) for k in range(4)}) for s in range(len(shapes.SHAPES))]
dist = torch.cdist(flat.reshape(-1, flat.shape[-1]), flat.reshape(-1, flat.shape[-1])).reshape(8, 4, 8, 4)
rows = "| shape | orientations (measured) | declared | nearest other shape | its distance / sprite norm |\n"
rows += "|---|---|---|---|---|\n"
separation = {}
for s, name in enumerate(shapes.SHAPES):
    others = dist[s, 0].clone()
    others[s] = float("inf")
    nearest = int(others.min(1).values.argmin())
    ratio = float(others.min() / flat[s, 0].norm())
    separation[name] = ratio
    rows += (f"| {name} | {measured_counts[s]} | {shapes.NUM_ORIENTATIONS[s]} | {shapes.SHAPES[nearest]} "
             f"| {ratio:.2f} |\n")
display(Markdown(rows))
assert tuple(measured_counts) == shapes.NUM_ORIENTATIONS

# %% [markdown]
# Every sprite differs from every sprite of another shape by at least about half of its own norm,
# which is far beyond anti-aliasing noise: the shapes are distinguishable, and a network that
# reconstructs them must keep their identity.
#
# ## Positions, and how a rotation moves them
#
# An image holds one shape in each quadrant. We number the quadrants counter-clockwise from the
# top right, like the quadrants I–IV of the plane. With this numbering the rotation
# $g$ (90° counter-clockwise, the convention of chapter 1) simply adds one to every position
# ({numref}`fig-02-positions`):

# %%
example = shapes.make_dataset(1, seed, layout=layout)
texts = [f"p={p} ({shapes.POSITION_NAMES[p]})\n{shapes.SHAPES[example.shapes[0, p]]}, o={example.orientations[0, p]}"
         for p in range(4)]
fig = esae.plots.labelled_quadrants(example.images[0], shapes.QUADRANT_ORIGINS, texts, shapes.CELL, size=4.6)
esae.figures.show(fig, "fig-02-positions", "One generated image: the positions $p$ of its quadrants and the label "
                  "of each (shape, orientation $o$).")

# %% [markdown]
# Rotating the image by $g^k$ therefore moves the shape at position $p$ to position
# $(p + k) \bmod 4$ and turns it, so its orientation becomes $(o + k) \bmod n_s$ with $n_s$ its
# number of orientations. {numref}`fig-02-orbit` shows the orbit of that image; the table under it
# gives the labels {py:func}`esae.shapes.rotate` computes for each rotation:

# %%
orbit = [shapes.rotate(example, k) for k in range(4)]
fig = esae.plots.image_grid(torch.cat([o.images for o in orbit]), [f"$g^{k} x$" for k in range(4)], ncols=4, size=2.0)
esae.figures.show(fig, "fig-02-orbit", "The C4 orbit of the image above: its rotations by $k$ quarter turns.")

# %%
rows = "| | " + " | ".join(f"p={p}" for p in range(4)) + " |\n" + "|---" * 5 + "|\n"
for k, o in enumerate(orbit):
    rows += f"| $g^{k} x$ | " + " | ".join(f"{shapes.SHAPES[o.shapes[0, p]]}, o={o.orientations[0, p]}"
                                          for p in range(4)) + " |\n"
display(Markdown(rows))

# %% [markdown]
# Because each sprite is a rotation of one canonical sprite and the quadrants are aligned with
# the pixel grid, the action is exact: rotating the pixels and re-drawing from the rotated labels
# give the same image, bit for bit. We check it on the whole generated dataset, along with the
# composition law $g(gx) = g^2 x$:

# %%
data = shapes.make_dataset(n_samples, seed, layout=layout)
exact = {f"rotate(images, {k}) == render(rotated labels)":
         bool(torch.equal(rotate_images(data.images, k),
                          shapes.render(*shapes.rotate_labels(data.shapes, data.orientations, k))))
         for k in (1, 2, 3)}
twice, once = shapes.rotate(shapes.rotate(data, 1), 1), shapes.rotate(data, 2)
exact["rotate twice by 1 == rotate by 2"] = bool(
    torch.equal(twice.images, once.images) and np.array_equal(twice.shapes, once.shapes)
    and np.array_equal(twice.orientations, once.orientations))
exact

# %% [markdown]
# ## Samples: two readings of the paper
#
# The paper: "each [shape] can be in one of four positions … **applying 90° rotations to the
# images yields** either two or four possible orientations for each shape", and its equation (1)
# takes "canonical (one representative per orbit) inputs". Read literally, a generated image holds
# one shape per quadrant in its *base orientation* (as drawn in Figure 6), and orientations arise
# only from rotating the whole image by $g^p$. We call this layout **upright**: a sample is
# $g^p x$ with $x$ generated (shapes uniform, orientation 0) and $p$ uniform in 0..3, the generated
# image is the canonical member of its orbit, and $p$ is known by construction
# (`ShapesDataset.rotations`, `ShapesDataset.canonical()`). It is the reading this book uses
# (`layout` in the profile, recorded in every cache key).
#
# The other reading, **independent**, draws a uniform rotation in every quadrant separately, so the
# four shapes of an image need not share an orientation; the generated image is then no different
# from its rotations, and an invariant SAE needs some other rule to pick a canonical member
# (chapter 5 then takes the member with the smallest label code). {numref}`fig-02-samples` shows
# samples of both, the counterpart of the paper's Figure 2:

# %%
data = {lay: shapes.make_dataset(n_samples, seed, layout=lay) for lay in shapes.LAYOUTS}
data_main = data[layout]
half = max(1, n_show // 2)
fig = esae.plots.image_grid(torch.cat([data["upright"].images[:half], data["independent"].images[:half]]),
                            [f"upright, p={int(r)}" for r in data["upright"].rotations[:half]] + ["independent"] * half,
                            ncols=8, size=1.25)
esae.figures.show(fig, "fig-02-samples", f"{half} samples of the upright layout (with the rotation $p$ applied to "
                  f"the generated image), then {half} of the independent layout (the paper's Figure 2).")

# %% [markdown]
# **How many distinct images?** Under *upright* a label set is the four shapes of a generated
# image, $8^4 = 4{,}096$ of them; with its four rotations that is at most $16{,}384$ images (fewer
# where a rotation of an all-rectangle/diagonal image is itself upright). A training set of
# 10,000 samples therefore sees most label sets. To keep held-out numbers honest, every C4 orbit —
# under *upright* every label set — belongs to one of three fixed **pools** (`esae.shapes.POOLS`,
# by a hash of the orbit key): base models, $M$ and SAEs train on the `train` pool, the probes fit
# on the `probe` pool and everything is evaluated on the `heldout` pool. The table counts them and
# what a training set of the chapter-3 size covers.

# %%
n_train_images = upstream["03_base_models"]["n_train"]
all_sets = shapes.upright_label_sets()
keys_all = shapes.orbit_keys(*all_sets)
pool_of = shapes.orbit_pool(*all_sets)
n_orbits = len(np.unique(keys_all))
distinct_images = len(np.unique(np.concatenate([shapes._codes(*shapes.rotate_labels(*all_sets, k)) for k in range(4)])))
unpooled = shapes.make_dataset(n_train_images, seed + 7, layout="upright")
covered = len(np.unique(unpooled.orbit_keys())) / n_orbits
train_pool = shapes.make_dataset(n_train_images, seed, layout="upright", pool="train")
pool_counts = {name: int(len(np.unique(keys_all[pool_of == i]))) for i, name in enumerate(shapes.POOLS)}
covered_pool = len(np.unique(train_pool.orbit_keys())) / pool_counts["train"]
rows = ("| | upright | independent |\n|---|---|---|\n"
        f"| distinct label sets (orbits) | {len(all_sets[0]):,} ({n_orbits:,} orbits) | "
        f"{(2 * 2 + 6 * 4) ** 4:,} label sets |\n"
        f"| distinct images | {distinct_images:,} | {(2 * 2 + 6 * 4) ** 4:,} |\n"
        f"| orbits seen by {n_train_images:,} random samples (no pools, the paper's setup) | {covered:.1%} | "
        f"{len(np.unique(shapes.make_dataset(n_train_images, seed + 7, layout='independent').orbit_keys())) / (28 ** 4 / 4):.1%} |\n")
display(Markdown(rows + "\n" + f"Upright orbits per pool: " + ", ".join(f"{k} {v:,}" for k, v in pool_counts.items())
                 + f". {n_train_images:,} training samples drawn from the `train` pool cover {covered_pool:.1%} of its "
                 f"orbits; the {pool_counts['heldout']:,} `heldout` and {pool_counts['probe']:,} `probe` orbits are never "
                 "trained on."))

# %% [markdown]
# What this means for the paper's own setup: with 10,000 upright images and no held-out label
# sets, its SAEs (and probes) saw about nine in ten of all label sets, each in a random rotation,
# so a test image is very likely a rotation of a training image. Our pools cost 30 % of the label
# sets for training but make every held-out number a measure of generalisation to unseen label
# sets.
#
# Since the label distribution is invariant under C4 in both layouts — rotating a random sample
# gives another equally likely sample — augmenting the training data with random rotations, as
# chapter 3 does, changes which images the network sees but not their distribution.
#
# ## The 180 probing tasks
#
# Appendix C.1 defines binary tasks about what an image contains, in four groups:
#
# - **S**(s): shape $s$ anywhere, in any orientation — 8 tasks, the only ones *invariant* under rotation;
# - **SO**(s, o): shape $s$ in orientation $o$, any position — 2·2 + 6·4 = 28 tasks;
# - **SP**(s, p): shape $s$ at position $p$, any orientation — 8·4 = 32 tasks;
# - **SPO**(s, p, o): shape $s$ at position $p$ in orientation $o$ — (2·2 + 6·4)·4 = 112 tasks.
#
# Under a rotation $g^k$ the label of SP(s, p) becomes that of SP(s, p + k), and SO and SPO move
# alike: the equivariant tasks are permuted among themselves. {py:func}`esae.shapes.task_labels` computes
# all of them from the labels; below we measure the share of negative examples of each group on
# the generated images, next to the share the sampling distribution implies (for a task that needs
# a given shape in a given quadrant with probability $q$, a negative has probability $(1-q)^m$,
# with $m$ the number of quadrants that may hold it) and next to the paper's statement.

# %%
tasks = shapes.probing_tasks()
group_of = np.array([t.group for t in tasks])
paper = {"S": ("8", "~58%"), "SO": ("28", "87–89%"), "SP": ("32", "87–89%"), "SPO": ("112", "97%")}
shares_by_layout = {}
for lay in shapes.LAYOUTS:
    negative = 1 - shapes.task_labels(data[lay], tasks).mean(0)
    expected = np.array([shapes.expected_negative_share(t, lay) for t in tasks])
    shares_by_layout[lay] = {g: {"mean": float(negative[group_of == g].mean()), "min": float(negative[group_of == g].min()),
                                 "max": float(negative[group_of == g].max()),
                                 "expected": float(expected[group_of == g].mean()), "n_tasks": int((group_of == g).sum())}
                             for g in shapes.TASK_GROUPS}
shares = shares_by_layout[layout]
rows = ("| group | tasks | paper's count | negatives, upright (mean, min–max) | expected | negatives, independent "
        "| expected | paper |\n|---|---|---|---|---|---|---|---|\n")
for g in shapes.TASK_GROUPS:
    u, i = shares_by_layout["upright"][g], shares_by_layout["independent"][g]
    rows += (f"| {g} | {u['n_tasks']} | {paper[g][0]} | {u['mean']:.1%} ({u['min']:.1%}–{u['max']:.1%}) | {u['expected']:.1%} "
             f"| {i['mean']:.1%} ({i['min']:.1%}–{i['max']:.1%}) | {i['expected']:.1%} | {paper[g][1]} |\n")
display(Markdown(rows))

# %% [markdown]
# The counts match appendix C.1 exactly. The class balance follows from the sampling: an S task is
# negative when none of four quadrants holds its shape, $(7/8)^4 = 58.6\%$; an SP task when one
# quadrant does not, $7/8 = 87.5\%$; an SO task for a four-orientation shape when none of four
# quadrants holds it in that orientation, $(31/32)^4 = 88.1\%$; an SPO task $31/32 = 96.9\%$. The
# paper's ranges describe the four-orientation shapes. The two-orientation shapes are twice as
# likely to appear in a given orientation, so their SO tasks are negative only
# $(15/16)^4 = 77.2\%$ of the time and their SPO tasks $15/16 = 93.8\%$: the lower ends of the
# min–max ranges above. Under *upright* the S and SP tasks are unchanged, but an orientation is
# shared by all four shapes (the image's rotation decides it): an SO task for a four-orientation
# shape is positive when the image has the right rotation (1/4) and holds the shape anywhere
# ($1 - (7/8)^4$), negative $1 - 0.25 \cdot 0.414 = 89.6\%$ of the time; an SPO task stays at
# $1 - 1/32$. Both readings reproduce the paper's balance about equally well, so the balance cannot
# tell them apart. As in the paper, the imbalance is why chapter 6 reports F1 scores rather than
# accuracies.
#
# ## What this run showed

# %% tags=["remove-input"]
results = {
    "orientation_counts": dict(zip(shapes.SHAPES, measured_counts)),
    "group_action_exact": all(exact.values()),
    "min_separation_ratio": min(separation.values()),
    "n_tasks": {g: shares[g]["n_tasks"] for g in shapes.TASK_GROUPS},
    "negative_share": {g: shares[g]["mean"] for g in shapes.TASK_GROUPS},
    "layout": layout,
    "negative_share_by_layout": {lay: {g: v["mean"] for g, v in by.items()} for lay, by in shares_by_layout.items()},
    "upright_label_sets": int(len(all_sets[0])),
    "upright_orbits": int(n_orbits),
    "upright_distinct_images": int(distinct_images),
    "orbits_per_pool": pool_counts,
    "coverage_of_unpooled_training_set": float(covered),
}
esae.results.write_results(profile, "02_dataset", results)
display(Markdown(
    f"The eight sprites have {', '.join(str(c) for c in measured_counts)} distinct orientations, as declared; the "
    f"closest pair of different shapes is still {results['min_separation_ratio']:.2f} sprite norms apart. On "
    f"{n_samples:,} generated images (layout **{layout}**) the C4 action is pixel-exact: **{results['group_action_exact']}**. There are "
    f"{len(tasks)} probing tasks ({', '.join(f'{v} {g}' for g, v in results['n_tasks'].items())}), with "
    f"{shares['S']['mean']:.1%} negatives in S, {shares['SO']['mean']:.1%} in SO, {shares['SP']['mean']:.1%} in SP "
    f"and {shares['SPO']['mean']:.1%} in SPO (the paper: ~58%, 87–89%, 87–89%, 97%; the SO and SPO means sit slightly "
    f"below because the rectangle and the diagonal have only two orientations; under the other reading: "
    + ", ".join(f"{v:.1%} {g}" for g, v in results["negative_share_by_layout"]["independent" if layout == "upright" else "upright"].items())
    + f"). There are {results['upright_label_sets']:,} upright label sets ({results['upright_orbits']:,} orbits, "
    f"{results['upright_distinct_images']:,} distinct images); {n_train_images:,} random samples would cover "
    f"{covered:.0%} of them, so held-out sets here come from label sets no model trains on. The chapter took "
    f"{time.perf_counter() - started:.1f} s.\n\n" + esae.verdicts.conclusion(results["verdicts"])))
