"""esae: equivariant sparse autoencoders and SAE Match, as used by the book's chapters.

Modules, each named for what it holds: ``groups`` (C4 and its action, chapter 1),
``shapes`` (the dataset, chapter 2), ``autoencoders`` (base models, chapter 3),
``equivariance`` (fitting M, chapter 4), ``saes`` (the SAEs, chapter 5), ``probing``
(chapter 6), ``sae_match`` and ``language_models`` (chapter 7); plumbing in ``params``, ``cache``, ``results``,
``runtime``, ``metrics``, ``plots`` and ``book``.

Submodules are imported on first use (``esae.plots`` loads matplotlib only when a figure is drawn),
so ``import esae.equivariance`` costs what that module needs and nothing more.
"""

from __future__ import annotations

import importlib
from typing import Any

# First, before any submodule loads torch: runtime sets OpenMP's wait policy (see esae.runtime).
from esae import runtime  # noqa: F401, I001

__version__ = "0.1.0"
__all__ = ["autoencoders", "beyond", "cache", "digits", "equivariance", "groups", "language_models", "metrics", "params", "plots",
           "probing", "results", "runtime", "sae_match", "saes", "shapes"]


def __getattr__(name: str) -> Any:
    """Import ``esae.<name>`` lazily (PEP 562), so ``esae.plots`` works without an explicit import."""
    if name in __all__:
        return importlib.import_module(f"esae.{name}")
    raise AttributeError(f"module 'esae' has no attribute {name!r}")
