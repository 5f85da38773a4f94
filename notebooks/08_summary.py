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
# One row per claim of the two papers: what the paper states, what this run measured, and whether
# they agree. The table is generated from the result files the chapters wrote
# (`results/<profile>/*.json`) when this page was executed, so it cannot drift from the run; the
# chapters explain every number and every disagreement. "Reported" marks a measurement the paper
# gives no number for; "beyond" marks this book's extensions.

# %% tags=["parameters"]
profile: str = "default"  # parameter profile whose results are summarised: smoke | default | paper
seed: int = 0  # unused here; every chapter declares it
device: str = "auto"  # unused here; every chapter declares it

# %% tags=["hide-input"]
from IPython.display import Markdown, display

import esae
from esae import summary

esae.params.check_profile(profile)
rows = summary.claims(profile)
display(Markdown(summary.claims_markdown(rows)))

# %% tags=["hide-input"]
counts = {v: sum(r.verdict == v for r in rows) for v in ("agrees", "differs", "reported", "not run")}
display(Markdown(f"Profile **{profile}**: {counts['agrees']} claims agree, {counts['differs']} differ, "
                 f"{counts['reported']} are reported without a paper number, {counts['not run']} were not run."))

# %% [markdown]
# ## Wall time of each chapter

# %% tags=["hide-input"]
display(Markdown(summary.timings_markdown(profile)))
