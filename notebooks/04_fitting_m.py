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
# This chapter will fit the matrix $M$ with $\psi(g^p x) \approx M^p \psi(x)$ for both base
# models, compare it with $M = I$, look at its eigenvalues against the fourth roots of unity and
# fit a version constrained to $M^4 = I$ (`esae.equivariance`).
#
# *This chapter is planned; its code lands with its own issue.*

# %% tags=["parameters"]
profile: str = "default"  # parameter profile that produced this page: smoke | default | paper
seed: int = 0  # seed for every random choice in the chapter
device: str = "auto"  # auto | cpu | cuda

# %%
import esae

esae.params.check_profile(profile)
esae.runtime.resolve_device(device)
esae.runtime.seed_everything(seed);
