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
# This chapter will train regular, wide and two-layer TopK SAEs and the invariant SAE made
# equivariant by $M$, classify its features as invariant or equivariant, draw them through the
# base model's decoder and place all SAEs on the sparsity/reconstruction frontier (`esae.saes`).
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
