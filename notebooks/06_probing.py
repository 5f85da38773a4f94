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
# This chapter will probe the SAEs' truncated latents and reconstructions on the 180 binary tasks
# with kNN, logistic-regression and XGBoost probes, and compare the four SAEs task group by task
# group (`esae.probing`).
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
