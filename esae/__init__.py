"""esae: equivariant sparse autoencoders and SAE Match, as used by the book's chapters.

Modules, each named for what it holds: ``groups`` (C4 and its action, chapter 1),
``shapes`` (the dataset, chapter 2), ``autoencoders`` (base models, chapter 3),
``orbits`` (a model's activations over the orbits of its inputs), ``equivariance`` (fitting M, chapter 4), ``saes`` (the SAE architectures, chapter 5),
``sae_training``, ``sae_evaluation``, ``sae_kernels`` and ``sae_stack`` (training and using them), ``probing``
and ``sae_probing`` (chapter 6), ``sae_match`` (the method), ``jumprelu`` (SAEs in Gemma Scope's units), ``match_ground_truth``,
``match_evaluation``, ``language_models`` and ``lm_loss`` (chapter 7), with ``checks``, ``metrics``, ``runtime`` and
``plots``: the science layer, which never reads a profile or the cache. ``pipeline`` holds the book's stages,
cached by their configs; ``params``, ``results``, ``verdicts``, ``figures``, ``summary`` and ``book`` turn profiles into executed chapters.

Submodules are imported on first use (``esae.plots`` loads matplotlib only when a figure is drawn),
so ``import esae.equivariance`` costs what that module needs and nothing more.

``import esae`` registers the package's two SAE architectures (``two_layer_topk`` and
``equivariant_topk``, :mod:`esae.saes`) with sae-lens, so ``sae_lens.SAE.load_from_disk`` loads
saved or exported SAEs (``python -m esae export``): at once when sae-lens is already imported,
otherwise the moment sae-lens is imported (a one-shot import hook), so ``import esae`` alone
still does not load sae-lens. sae-lens (6.x) has no plugin entry point: its registry is filled by
``register_sae_class`` calls in ``sae_lens/__init__.py`` and it never scans installed packages,
so the import of ``esae`` cannot be avoided.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from typing import Any

# First, before any submodule loads torch: runtime sets OpenMP's wait policy (see esae.runtime).
from esae import runtime  # noqa: F401, I001

__version__ = "0.1.0"
__all__ = ["autoencoders", "beyond", "cache", "checks", "digits", "equivariance", "export", "figures", "groups",
           "jumprelu", "language_models", "lm_loss", "match_evaluation", "match_ground_truth", "metrics", "orbits", "params",
           "pipeline", "plots", "probing", "results", "runtime", "sae_evaluation", "sae_kernels", "sae_match", "sae_probing",
           "sae_stack", "sae_training", "saes", "shapes", "summary", "verdicts"]


def __getattr__(name: str) -> Any:
    """Import ``esae.<name>`` lazily (PEP 562), so ``esae.plots`` works without an explicit import."""
    if name in __all__:
        return importlib.import_module(f"esae.{name}")
    raise AttributeError(f"module 'esae' has no attribute {name!r}")


def _register_with_sae_lens() -> None:
    try:
        importlib.import_module("esae.saes")  # registers on import (esae.saes.ensure_registered)
    except Exception as err:  # noqa: BLE001 - sae-lens itself must keep working
        warnings.warn(f"esae could not register its SAE architectures with sae-lens: {err}", stacklevel=2)


class _LoaderThenRegister(importlib.abc.Loader):
    """Executes sae-lens's own loader, then registers esae's architectures."""

    def __init__(self, loader: importlib.abc.Loader):
        self._loader = loader

    def create_module(self, spec):  # noqa: ANN001
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:  # noqa: ANN001
        self._loader.exec_module(module)
        module.__spec__.loader = self._loader
        _register_with_sae_lens()


class _SaeLensImportHook(importlib.abc.MetaPathFinder):
    """One-shot finder: when ``sae_lens`` is first imported, register after it has loaded."""

    def find_spec(self, name, path, target=None):  # noqa: ANN001
        if name != "sae_lens":
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _LoaderThenRegister(spec.loader)
        return spec


if "sae_lens" in sys.modules:
    _register_with_sae_lens()
elif not any(isinstance(f, _SaeLensImportHook) for f in sys.meta_path):
    sys.meta_path.insert(0, _SaeLensImportHook())
