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
# # Reproduction summary
#
# Every claim of the two papers that a chapter tests: what the paper states, what this run
# measured, the verdict and the comparison behind it. Each chapter judges its claims once, from its
# own numbers, and writes the verdicts into its result file (`results/<profile>/<chapter>.json`);
# this page only reads them, so it says exactly what the chapters' closing sections say, and the
# chapters explain every number and every disagreement. "Partly" marks a claim that holds on some
# of the models or panels it was tested on; "reported" a measurement the paper gives no number for;
# "beyond" this book's extensions.

# %% tags=["parameters"]
profile: str = "default"  # parameter profile whose results are summarised: smoke | default | paper
seed: int = 0  # unused here; every chapter declares it
device: str = "auto"  # unused here; every chapter declares it

# %% tags=["remove-input"]
from IPython.display import Markdown, display

import esae
from esae import summary

esae.params.check_profile(profile)
display(Markdown(summary.counts_line(profile)))

# %% tags=["remove-input"]
display(Markdown(summary.claims_markdown(profile, "##", link=esae.figures.in_book())))

# %% [markdown]
# ## Wall time of each chapter

# %% tags=["remove-input"]
display(Markdown(summary.timings_markdown(profile)))
