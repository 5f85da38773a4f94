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
n_train: int = 10000  # generated training images (the paper: 10000)
n_heldout: int = 2000  # held-out images, orbit-disjoint from the training set
mlp_epochs: int = 100  # training epochs of the MLP autoencoder (the paper: 100)
cnn_epochs: int = 100  # training epochs of the CNN autoencoder (the paper: 100)
batch_size: int = 64  # images per optimisation step (the paper: 64)
lr: float = 0.001  # Adam learning rate (the paper: 1e-3)

# %%
import esae

esae.params.check_profile(profile)
esae.runtime.resolve_device(device)
esae.runtime.seed_everything(seed);
