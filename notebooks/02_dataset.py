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
# This chapter will build the synthetic dataset of the first paper: 64×64 images with one of eight
# shapes, drawn with OpenCV, in each 32×32 quadrant, acted on exactly by C4; it will show every
# shape in every orientation, a grid of samples and one image's orbit, and define the 180 binary
# probing tasks with their class balance (`esae.shapes`).
#
# *This chapter is planned; its code lands with its own issue.*

# %% tags=["parameters"]
profile: str = "default"  # parameter profile that produced this page: smoke | default | paper
seed: int = 0  # seed for every random choice in the chapter
device: str = "auto"  # auto | cpu | cuda
n_samples: int = 10000  # generated images on which the task balance is measured (at least 100)
n_show: int = 32  # sample images shown in the grid (1..128)

# %%
import esae

esae.params.check_profile(profile)
esae.runtime.resolve_device(device)
esae.runtime.seed_everything(seed);
