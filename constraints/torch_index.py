"""Where the CPU install takes torch from: PyTorch's CPU wheel index when it answers.

On Linux, PyPI's torch is the CUDA build (several GB of nvidia packages); the CPU wheel lives on
PyTorch's own index. This script (standard library only, run by the Makefile before pip):

    python constraints/torch_index.py EXTRAS URL   prints "--extra-index-url URL" when EXTRAS
        contains "cpu", torch is not already a CPU build here, and URL answers within a few
        seconds; otherwise prints nothing (pip then takes torch from PyPI or from the wheels its
        configuration provides), so a machine that reaches only PyPI neither fails nor stalls.
    python constraints/torch_index.py --check EXTRAS   after the install: warns (exit 0) when the
        CPU install ended up with a CUDA build of torch.
"""

from __future__ import annotations

import importlib.metadata as md
import sys
import threading
import urllib.request

TIMEOUT_S = 5.0


def torch_is_cpu_build() -> bool | None:
    """True for a CPU build of torch, False for a CUDA one, None when torch is not installed."""
    try:
        requires = md.requires("torch") or []
        version = md.version("torch")
    except md.PackageNotFoundError:
        return None
    return "+cpu" in version or not any(r.startswith("nvidia-") for r in requires)


def answers(url: str, timeout: float = TIMEOUT_S) -> bool:
    """Whether ``url`` answers within ``timeout`` seconds (name lookup included)."""
    ok: list[bool] = []

    def probe() -> None:
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/torch/", timeout=timeout) as response:
                ok.append(response.status == 200)
        except Exception:  # noqa: BLE001 - any failure means: do not use this index
            ok.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    return bool(ok and ok[0])


def main(argv: list[str]) -> int:
    if argv[:1] == ["--check"]:
        extras = argv[1] if len(argv) > 1 else ""
        if "cpu" in extras.split(",") and torch_is_cpu_build() is False:
            print(f"[esae] note: torch {md.version('torch')} is a CUDA build (PyTorch's CPU wheel index was not "
                  "reachable); it works on the CPU too, only larger", file=sys.stderr)
        return 0
    extras, url = argv[0], argv[1]
    if "cpu" not in extras.split(",") or torch_is_cpu_build():
        return 0
    if answers(url):
        print(f"--extra-index-url {url}")
    else:
        print(f"[esae] PyTorch's CPU wheel index ({url}) does not answer: torch comes from PyPI or from "
              "pip's configured wheels", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
