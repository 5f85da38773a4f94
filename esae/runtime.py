"""Run-time plumbing shared by every chapter: device choice, seeding, progress bars, paths."""

from __future__ import annotations

import os
import random
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

T = TypeVar("T")

# Libraries that import tqdm.auto (sae-lens, transformers) warn once that ipywidgets is missing;
# the bars fall back to text, which is all a page executed by papermill can show anyway.
warnings.filterwarnings("ignore", message="IProgress not found")

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(device: str = "auto") -> torch.device:
    """Turn a device parameter into a `torch.device`.

    ``"auto"`` picks CUDA when it is available and the CPU otherwise; ``"cuda"`` or
    ``"cuda:N"`` demands a GPU and fails clearly when there is none.
    """
    if not isinstance(device, str) or device.split(":")[0] not in DEVICE_CHOICES:
        raise ValueError(f"device must be one of {', '.join(DEVICE_CHOICES)} (or cuda:N), got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was requested but CUDA is not available; use 'auto' or 'cpu'")
    return torch.device(device)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); return a CPU generator seeded alike."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def progress(iterable: Iterable[T] | None = None, **kwargs: Any) -> Any:
    """A tqdm progress bar: a widget in Jupyter when ipywidgets is installed, text otherwise.

    Set ``ESAE_PROGRESS=0`` to silence bars (the book build does, so executed pages stay clean).
    """
    kwargs.setdefault("disable", os.environ.get("ESAE_PROGRESS", "1") == "0")
    kwargs.setdefault("mininterval", 1.0)
    try:
        import ipywidgets  # noqa: F401

        from tqdm.auto import tqdm
    except ImportError:
        from tqdm import tqdm
    return tqdm(iterable, **kwargs)


def repo_root() -> Path:
    """The repository root: ``ESAE_ROOT`` if set, else the nearest parent of the working
    directory holding ``_config.yml`` and ``pyproject.toml``, else the working directory."""
    env = os.environ.get("ESAE_ROOT")
    if env:
        return Path(env)
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "_config.yml").is_file() and (candidate / "pyproject.toml").is_file():
            return candidate
    package_parent = Path(__file__).resolve().parent.parent
    if (package_parent / "_config.yml").is_file():
        return package_parent
    return here


def machine_description() -> dict[str, object]:
    """What a timing was measured on: CPU model and count, torch threads, GPU if any."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch": torch.__version__, "platform": platform.platform()}
