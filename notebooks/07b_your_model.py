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
# # Use it on your model
#
# Chapters 3–5 ran the method on the book's own autoencoders and 64×64 grey images. Nothing in
# the package needs either: what it asks of your model is one callable, `activations(inputs) ->
# (n, d)` — your network up to the layer you study — and, optionally, the group's action on your
# inputs (by default C4 rotating the last two axes with `torch.rot90`, so images `(n, C, H, H)`
# of any size and channel count work as they are). This page does the whole workflow on a model
# the book did not train:
#
# 1. the activations of every rotation of the inputs ({py:func}`esae.equivariance.orbit_activations`,
#    {py:func}`esae.sae_training.orbit_acts`, both built on {py:func}`esae.orbits.orbit`);
# 2. the matrix $M$ of chapter 4 ({py:func}`esae.equivariance.fit_m`) and its $R^2$ per power
#    ({py:func}`esae.equivariance.r2`);
# 3. an invariant SAE made equivariant by $M$ (chapter 5: {py:func}`esae.sae_training.train_sae`,
#    {py:meth}`esae.saes.EquivariantTopKSAE.from_invariant`), against a regular TopK SAE;
# 4. which features are invariant ({py:func}`esae.sae_evaluation.feature_scores`).
#
# **The model.** A small convolutional classifier of 3×32×32 colour images of eight chiral
# characters (F G J L P R 4 7), drawn upright in a random colour, size and position. It is trained
# here for a few seconds (`train_epochs` passes, each image in a random rotation) to name the
# character — trained rather than merely initialised, because a network's features are what a
# researcher studies; the same network *untrained* (same seed) is fitted alongside as the
# comparison, to show how much of the structure $M$ finds training adds. The studied layer is its
# 64-d penultimate pre-activation.

# %% tags=["parameters"]
profile: str = "default"  # parameter profile that produced this page: smoke | default | paper
seed: int = 0  # seed for the images, the network's initialisation and every training order
device: str = "auto"  # auto | cpu | cuda
n_train: int = 4096  # training images (the classifier, M and the SAEs all use these)
n_test: int = 1024  # held-out images, where every number below is measured
train_epochs: int = 4  # passes of the classifier over the training images, each in a random rotation
fit_epochs: int = 15  # Adam epochs of the fit of M (from the least-squares start, as chapter 4)
sae_epochs: int = 20  # passes of each SAE over the training orbits
k: int = 8  # active latents of the TopK SAEs
expansion: int = 8  # latents per activation dimension
batch_size: int = 64  # samples per Adam step (classifier and SAEs)
lr: float = 0.003  # Adam learning rate (classifier and SAEs)
invariance_threshold: float = 0.5  # cos(d, Md) at or above which a feature counts as invariant (as chapter 5)

# %%
import esae  # first: sets torch's CPU thread policy before torch loads (see esae.runtime)

import time

import cv2
import numpy as np
import torch
from IPython.display import Markdown, display
from torch import nn

from esae import equivariance as eq
from esae import sae_evaluation, sae_training, saes

esae.params.check_profile(profile)
esae.params.check_run("07b_your_model", profile)  # refuse sizes other than the profile's under its name
dev = esae.runtime.resolve_device(device)
esae.runtime.seed_everything(seed)
page_start = time.perf_counter()

# %% [markdown]
# ## Your data and your model
#
# Everything in this section is what a user brings; none of it is in the package.

# %%
CHARACTERS = "FGJLPR47"


def glyph_images(n: int, seed: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Upright characters in random colours, sizes and positions: images (n, 3, size, size), labels (n,)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CHARACTERS), n)
    images = np.zeros((n, 3, size, size), np.float32)
    for i, label in enumerate(labels):
        canvas = np.zeros((size, size), np.uint8)
        scale, thickness = rng.uniform(0.8, 1.1), int(rng.integers(2, 4))
        (w, h), _ = cv2.getTextSize(CHARACTERS[label], cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        origin = ((size - w) // 2 + int(rng.integers(-3, 4)), (size + h) // 2 + int(rng.integers(-3, 4)))
        cv2.putText(canvas, CHARACTERS[label], origin, cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thickness, cv2.LINE_AA)
        images[i] = rng.uniform(0.3, 1.0, 3).astype(np.float32)[:, None, None] * (canvas / 255.0)
    return torch.from_numpy(images), torch.from_numpy(labels)


# %%
class SmallConvNet(nn.Module):
    """3×32×32 → two stride-2 convolutions (16, 32 channels) → 64-d layer → ReLU → 8 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.Flatten(), nn.Linear(32 * 8 * 8, 64))
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(64, len(CHARACTERS)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# %%
train_images, train_labels = glyph_images(n_train, seed)
test_images, test_labels = glyph_images(n_test, seed + 1)

torch.manual_seed(seed)
untrained = SmallConvNet().to(dev).eval()
net = SmallConvNet().to(dev)
net.load_state_dict(untrained.state_dict())  # the same initialisation, then trained

# %%
start = time.perf_counter()
opt = torch.optim.Adam(net.parameters(), lr=lr)
gen = torch.Generator().manual_seed(seed)
for _ in range(train_epochs):
    for idx in torch.randperm(n_train, generator=gen).split(batch_size):
        x, p = train_images[idx].clone(), torch.randint(4, (len(idx),), generator=gen)
        for q in (1, 2, 3):  # each image in its own random rotation
            x[p == q] = torch.rot90(x[p == q], q, dims=(-2, -1))
        loss = nn.functional.cross_entropy(net(x.to(dev)), train_labels[idx].to(dev))
        opt.zero_grad()
        loss.backward()
        opt.step()
net.eval()
train_seconds = time.perf_counter() - start
with torch.no_grad():
    accuracy = {q: float((net(torch.rot90(test_images, q, dims=(-2, -1)).to(dev)).argmax(1).cpu() == test_labels)
                         .float().mean()) for q in range(4)}
display(Markdown(f"Trained for {train_seconds:.1f} s ({train_epochs} epochs on {n_train:,} images); held-out "
                 f"accuracy over the 4 rotations: {np.mean(list(accuracy.values())):.1%} (chance: "
                 f"{1 / len(CHARACTERS):.1%})."))
esae.figures.show(esae.plots.image_grid(test_images[:8], titles=[CHARACTERS[int(t)] for t in test_labels[:8]]),
                  "fig-07b-glyphs", "Eight held-out images of the user's data (3×32×32 characters in random colours, "
                  "sizes and positions), titled by their class.")

# %% [markdown]
# ## The activations of every rotation, and $M$
#
# The only thing the package needs is `psi`, the studied layer as a function of a batch of images.
# `orbit_activations` returns $\psi(x)$ `(n, d)` and $\psi(g^p x)$ for $p = 1..3$ `(3, n, d)` — the
# arguments of `fit_m` and `r2`, exactly as in chapter 4.

# %%
def psi(x: torch.Tensor) -> torch.Tensor:
    return net.features(x.to(dev))  # (n, 64): the penultimate pre-activation


def psi_untrained(x: torch.Tensor) -> torch.Tensor:
    return untrained.features(x.to(dev))


fit_config = eq.FitConfig(init="lstsq", epochs=fit_epochs, seed=seed)
fits, r2s = {}, {}
for name, fn in {"trained": psi, "untrained": psi_untrained}.items():
    acts, acts_rotated = eq.orbit_activations(fn, train_images)
    fits[name] = eq.fit_m(acts, acts_rotated, fit_config, device=dev)
    heldout = eq.orbit_activations(fn, test_images)
    r2s[name] = {"fitted M": eq.r2(*heldout, fits[name].m), "M = I": eq.r2(*heldout, torch.eye(acts.shape[1]))}
train_acts = eq.orbit_activations(psi, train_images)[0]

rows = [f"| {name} | {which} | " + " | ".join(f"{r['pooled'][p]:.3f}" for p in (1, 2, 3, 4)) + f" | **{r['pooled_mean']:.3f}** |"
        for name, by in r2s.items() for which, r in by.items()]
display(Markdown("Held-out pooled $R^2$ of $M^p\\psi(x)$ against $\\psi(g^p x)$, per power $p$ (the mean is over "
                 "the non-trivial powers 1–3, as in chapter 4):\n\n| network | matrix | p = 1 | p = 2 | p = 3 | p = 4 | "
                 "mean 1–3 |\n|---|---|---|---|---|---|---|\n" + "\n".join(rows)))

# %% [markdown]
# ## An invariant SAE, made equivariant by $M$
#
# `orbit_acts` gives the orbit activations `(n, 4, d)` with entry `[i, 0]` the image as drawn —
# upright, so it is the canonical member of its orbit, the invariant SAE's target (chapter 5
# explains why the target must be identifiable from any rotation: here the characters are chiral
# and drawn upright, so it is). The regular TopK SAE trains on the same rotation-augmented
# activations with the usual reconstruction loss. Both reload with plain
# `sae_lens.SAE.load_from_disk` after `import esae`.

# %%
orbit_train = sae_training.orbit_acts(psi, train_images)
orbit_test = sae_training.orbit_acts(psi, test_images)
d = orbit_train.shape[2]
common = dict(k=k, d_in=d, expansion=expansion, d_hidden=2 * d, n_epochs=sae_epochs, batch_size=batch_size, lr=lr,
              seed=seed)
trained = {name: sae_training.train_sae(sae_training.SAETrainConfig(name=name, **common), orbit_train, dev)
           for name in ("regular", "invariant")}
equivariant = saes.EquivariantTopKSAE.from_invariant(trained["invariant"].sae, fits["trained"].m.to(dev))

p_test = torch.arange(n_test) % 4  # each held-out image in one rotation
x_test = orbit_test[torch.arange(n_test), p_test].to(dev)
metrics = {"regular": sae_evaluation.evaluate(trained["regular"].sae, x_test),
           "equivariant": sae_evaluation.evaluate(equivariant, x_test, p_test.to(dev))}
target_fit = sae_evaluation.invariant_fit(trained["invariant"].sae, orbit_test)
display(Markdown(
    f"Held-out rotated activations, {trained['regular'].sae.cfg.d_sae} latents, K = {k}:\n\n"
    "| SAE | explained variance | L0 | dead latents | training (s) |\n|---|---|---|---|---|\n"
    + "\n".join(f"| {name} | {m['explained_variance']:.3f} | {m['l0']:.1f} | {m['dead']:.0%} | "
                f"{trained['invariant' if name == 'equivariant' else name].history['seconds']:.1f} |"
                for name, m in metrics.items())
    + f"\n\nThe invariant SAE's reconstruction of a rotated image's activation, compared with the upright "
      f"image's activation (its target): $R^2$ = {target_fit['r2_target']:.3f}; compared with the orbit mean (what "
      f"an encoder that cannot tell which member is upright would return): {target_fit['r2_orbit_mean']:.3f}."))

# %% [markdown]
# ## Which features are invariant
#
# As in chapter 5, each decoder row $d$ is scored by $\cos(d, M d)$ inside the span the
# activations occupy ({py:func}`esae.sae_evaluation.data_basis`), counting only features that fire on
# held-out images; a score of at least `invariance_threshold` means most of the feature is
# unchanged by rotation.

# %%
basis = sae_evaluation.data_basis(train_acts)
with torch.no_grad():
    scores, alive = {}, {}
    for name, sae in {"equivariant": equivariant, "regular": trained["regular"].sae}.items():
        scores[name] = sae_evaluation.feature_scores(sae.W_dec.cpu(), fits["trained"].m, basis)
        alive[name] = sae_evaluation.latent_statistics(sae, x_test)["frequency"] > 0
shown = {name: s[alive[name]] for name, s in scores.items()}
fig = esae.plots.score_histogram(shown, threshold=invariance_threshold, xlabel="cos(d, M d)")
esae.figures.show(fig, "fig-07b-scores", "Feature scores cos(d, Md) of the live features of the equivariant and "
                  "the regular SAE on the trained network; the dashed line is the invariance threshold.")
invariant_share = {name: float(sae_evaluation.classify_features(s, invariance_threshold).float().mean()) for name, s in shown.items()}
display(Markdown(" · ".join(f"{name}: {int(alive[name].sum())} live features, {invariant_share[name]:.0%} invariant"
                            for name in shown)))

# %% [markdown]
# {numref}`fig-07b-scores` shows the feature scores $\cos(d, Md)$ of the live features of both SAEs on the
# trained network; the dashed line is the threshold.

# %% [markdown]
# ## What this run showed

# %% tags=["remove-input"]
page_seconds = time.perf_counter() - page_start
esae.results.write_results(profile, "07b_your_model", {
    "accuracy": float(np.mean(list(accuracy.values()))),
    "r2_mean": {name: {which: r["pooled_mean"] for which, r in by.items()} for name, by in r2s.items()},
    "r2_per_power": {name: {str(p): v for p, v in by["fitted M"]["pooled"].items()} for name, by in r2s.items()},
    "explained_variance": {name: m["explained_variance"] for name, m in metrics.items()},
    "invariant_r2_target": target_fit["r2_target"],
    "invariant_share": invariant_share,
})
best, worst = r2s["trained"]["fitted M"], r2s["untrained"]["fitted M"]
display(Markdown(
    f"On a network the book never saw, one matrix explains how its 64-d layer moves "
    f"when the input turns: held-out $R^2$ = {best['pooled_mean']:.3f} (per power "
    + ", ".join(f"{best['pooled'][p]:.3f}" for p in (1, 2, 3))
    + f") after {train_seconds:.0f} s of training, against {worst['pooled_mean']:.3f} for the same network "
      f"untrained and {r2s['trained']['M = I']['pooled_mean']:.3f} for $M = I$. The equivariant SAE explains "
      f"{metrics['equivariant']['explained_variance']:.1%} of the held-out variance (regular TopK SAE: "
      f"{metrics['regular']['explained_variance']:.1%}), and {invariant_share['equivariant']:.0%} of its live "
      f"features are invariant. The page took {page_seconds:.0f} s."))
