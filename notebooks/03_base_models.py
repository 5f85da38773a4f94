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
# # The base autoencoders
#
# This chapter will train the MLP and CNN autoencoders of the paper's Table 1 on rotation-
# augmented images, show their training curves and reconstructions, and take a first look at how
# their 256-dimensional activations move when the image rotates (`esae.autoencoders`).
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
