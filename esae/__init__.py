"""esae: equivariant sparse autoencoders and SAE Match, as used by the book's chapters.

Modules, each named for what it holds: ``groups`` (C4 and its action, chapter 1),
``shapes`` (the dataset, chapter 2), ``autoencoders`` (base models, chapter 3),
``equivariance`` (fitting M, chapter 4), ``saes`` (the SAEs, chapter 5), ``probing``
(chapter 6), ``sae_match`` and ``language_models`` (chapter 7); plumbing in ``params``, ``cache``, ``results``,
``runtime``, ``metrics``, ``plots`` and ``book``.
"""

from esae import runtime  # noqa: I001 — first: sets OpenMP's wait policy before torch loads (see runtime)
from esae import autoencoders, cache, groups, metrics, params, plots, probing, results, shapes

__version__ = "0.1.0"
__all__ = ["autoencoders", "cache", "groups", "metrics", "params", "plots", "probing", "results", "runtime", "shapes"]
