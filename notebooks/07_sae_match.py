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
# This chapter will match JumpReLU SAE features between consecutive layers by folding thresholds
# into the weights and solving a linear assignment problem, on Gemma 2 with Gemma Scope where a
# GPU and the model hub are available and offline on Gemma 3 270M, and check it against SAEs whose
# true correspondence is known (`esae.sae_match`).
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
