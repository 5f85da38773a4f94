"""Export a profile's trained artifacts as folders named by what they are (book/pipeline side).

``python -m esae export --profile default DIR`` writes, for each base model (``mlp``, ``cnn``)::

    DIR/index.json                 what was exported (and what was not, and why)
    DIR/README.md                  how to load it
    DIR/<model>/base_model/        model.safetensors + config.json (esae.autoencoders.TrainConfig)
    DIR/<model>/m/                 m.safetensors ("m": (256, 256)) + config.json (FitConfig, held-out R²)
    DIR/<model>/<name>/k<K>/       a sae-lens folder: cfg.json + sae_weights.safetensors, and
                                   esae.json (the training config and history summary)

with ``<name>`` in regular, wide, two_layer, invariant, equivariant. Every SAE folder loads with
plain ``sae_lens.SAE.load_from_disk(path)`` once ``esae`` is imported (``import esae`` registers
the two custom architectures, ``two_layer_topk`` and ``equivariant_topk``, with sae-lens — at
once if sae-lens is already imported, otherwise the moment it is; see :mod:`esae`). The
equivariant SAE keeps M inside its ``sae_weights.safetensors``.

Nothing is computed that the cache does not hold: the export reads the cache under
:func:`esae.cache.read_only`, exports what the chapters made, lists what is missing (in
``index.json`` and on the terminal, with the chapter that makes it) and exits with status 1 when
something is. ``--compute`` trains what is missing instead, exactly as the chapters would (same
configurations, same cache entries).

The artifacts come from the pipeline functions the chapters use; the three call sites are
:func:`_base_model`, :func:`_fitted_m` and :func:`_saes`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from esae.params import PROFILES, check_choice, check_profile
from esae.temporaries import owned_prefix

BASE_MODELS = ("mlp", "cnn")
MADE_BY = {"base_model": "03", "fitted_m": "04", "sae": "05", "sae_equivariant": "05"}
INDEX = "index.json"


# ------------------------------------------------------------------ the pipeline's artifacts

def _chapter(profile: str, stem: str) -> dict[str, Any]:
    """Chapter ``stem``'s parameters under ``profile`` as the book injects them."""
    from esae.params import resolved_parameters

    return resolved_parameters(stem, profile)


def _base_config(profile: str, model: str, layout: str | None) -> Any:
    from esae import pipeline

    layout = layout or pipeline.dataset_layout(_chapter(profile, "02_dataset"))
    return pipeline.base_model_configs(_chapter(profile, "03_base_models"), layout)[model]


def _base_model(profile: str, model: str, layout: str | None, device: torch.device) -> tuple[torch.nn.Module, dict[str, Any], Any]:
    """Chapter 3's base model ``model`` under ``profile``: ``(net, history, TrainConfig)``."""
    from esae import pipeline

    config = _base_config(profile, model, layout)
    net, history = pipeline.base_model(config, device)
    return net, history, config


def _fitted_m(profile: str, model: str, layout: str | None, device: torch.device) -> tuple[torch.Tensor, dict[str, Any], Any]:
    """Chapter 4's M for ``model`` (the least-squares warm start chapter 5 uses): ``(m, history, FitConfig)``."""
    from esae import pipeline

    fits = pipeline.fit_configs(_chapter(profile, "04_fitting_m"))
    fit = pipeline.fit(_base_config(profile, model, layout), fits, "warm_start", device)
    return fit.m, (fit.history[-1] if fit.history else {}), fits["warm_start"]


def _saes(profile: str, model: str, layout: str | None,
          device: torch.device) -> dict[tuple[str, int], tuple[Any, dict[str, Any], Any]]:
    """Chapter 5's SAEs for ``model``, keyed by ``(name, k)``: ``(sae, history, SAETrainConfig)``."""
    from esae import pipeline

    base = _base_config(profile, model, layout)
    configs = pipeline.sae_configs(_chapter(profile, "05_equivariant_sae"), base.layout)
    fits = pipeline.fit_configs(_chapter(profile, "04_fitting_m"))
    results = pipeline.saes(base, configs, fits, device)
    out = {}
    for (name, k), result in results.items():
        config = configs[("invariant" if name == "equivariant" else name, k)]
        out[(name, k)] = (result.sae, result.history, config)
    return out


# ------------------------------------------------------------------ writing folders

def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _write_folder(target: Path, fill: Callable[[Path], None]) -> None:
    """Build ``target`` in a temporary sibling and move it into place (replacing an older export)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=owned_prefix(f".tmp-{target.name}-"), dir=target.parent))
    try:
        fill(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(_plain(data), indent=1, sort_keys=True) + "\n")


def _history_summary(history: dict[str, Any]) -> dict[str, Any]:
    """An SAE's training history without the per-step curve."""
    mse = history.get("mse") or []
    return {**{k: v for k, v in history.items() if k != "mse"}, "final_mse": mse[-1] if mse else None}


def export_profile(profile: str, out: str | Path, *, models: Sequence[str] = BASE_MODELS, compute: bool = False,
                   layout: str | None = None, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Export ``profile``'s base models, fitted M and SAEs of ``models`` into ``out`` (see the
    module docstring) and return the index written to ``out/index.json``: ``entries`` (one dict per
    folder: ``path``, ``kind``, ``model``, and for SAEs ``name``, ``k``, ``architecture``, ``d_in``,
    ``d_sae``) and ``missing`` (what the cache lacked: ``model``, ``what``, ``chapter``).
    Without ``compute``, nothing is trained or fitted; with it, on ``device`` (``auto``: a GPU if any)."""
    import contextlib

    from esae import __version__
    from esae.cache import NotCached, read_only
    from safetensors.torch import save_file as save_tensors

    from esae.runtime import resolve_device

    check_profile(profile)
    device = resolve_device(device) if isinstance(device, str) else device
    for model in models:
        check_choice("model", model, BASE_MODELS)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, Any]] = []
    missing: list[dict[str, Any]] = []
    guard = contextlib.nullcontext if compute else read_only

    def attempt(model: str, what: str, fn: Callable[[], Any]) -> Any:
        try:
            with guard():
                return fn()
        except NotCached as err:
            chapter = MADE_BY.get(err.kind, "05")
            missing.append({"model": model, "what": what, "not_cached": err.kind, "chapter": chapter})
            return None

    for model in models:
        base = attempt(model, "base_model", lambda: _base_model(profile, model, layout, device))
        if base is None:
            missing.append({"model": model, "what": "m and saes", "not_cached": "base_model", "chapter": "03"})
            continue
        net, history, config = base

        def fill_base(tmp: Path, net=net, history=history, config=config, model=model) -> None:
            save_tensors({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, tmp / "model.safetensors")
            _write_json(tmp / "config.json", {"class": f"esae.autoencoders.{type(net).__name__}", "kind": model,
                                              "train_config": config,
                                              "heldout_mse": (history.get("heldout_mse") or [None])[-1],
                                              "load": "esae.export.load_base_model(path)"})

        _write_folder(out / model / "base_model", fill_base)
        entries.append({"path": f"{model}/base_model", "kind": "base_model", "model": model})

        fitted = attempt(model, "m", lambda: _fitted_m(profile, model, layout, device))
        if fitted is not None:
            m, last, fit_config = fitted

            def fill_m(tmp: Path, m=m, last=last, fit_config=fit_config, model=model) -> None:
                save_tensors({"m": m.detach().cpu().contiguous()}, tmp / "m.safetensors")
                _write_json(tmp / "config.json", {"model": model, "fit_config": fit_config, "last_epoch": last,
                                                  "convention": "row vectors: psi(g^p x) ~ psi(x) @ (M^p).T",
                                                  "load": "esae.export.load_m(path)"})

            _write_folder(out / model / "m", fill_m)
            entries.append({"path": f"{model}/m", "kind": "m", "model": model, "d": int(m.shape[0])})

        trained = attempt(model, "saes", lambda: _saes(profile, model, layout, device))
        for (name, k), (sae, history, config) in (trained or {}).items():
            rel = f"{model}/{name}/k{k}"

            def fill_sae(tmp: Path, sae=sae, history=history, config=config, name=name, model=model) -> None:
                sae.to("cpu").save_model(str(tmp))
                _write_json(tmp / "esae.json", {"profile": profile, "model": model, "name": name,
                                                "train_config": config, "history": _history_summary(history),
                                                "load": "import esae; sae_lens.SAE.load_from_disk(path)"})

            _write_folder(out / rel, fill_sae)
            entries.append({"path": rel, "kind": "sae", "model": model, "name": name, "k": k,
                            "architecture": sae.cfg.architecture(), "d_in": sae.cfg.d_in, "d_sae": sae.cfg.d_sae})

    from esae.pipeline import dataset_layout

    index = {"profile": profile, "layout": layout or dataset_layout(_chapter(profile, "02_dataset")),
             "esae_version": __version__,
             "entries": entries, "missing": missing}
    tmp_index = out / f".{INDEX}.{os.getpid()}"
    tmp_index.write_text(json.dumps(index, indent=1) + "\n")
    os.replace(tmp_index, out / INDEX)
    (out / "README.md").write_text(_readme(index))
    return index


def _readme(index: dict[str, Any]) -> str:
    lines = [f"# esae export: profile `{index['profile']}` (layout `{index['layout']}`, esae {index['esae_version']})",
             "", "```python", "import esae  # registers the architectures two_layer_topk and equivariant_topk with sae-lens",
             "from sae_lens import SAE", "", "sae = SAE.load_from_disk(\"cnn/equivariant/k16\")  # .encode, .decode, "
             ".m, .reconstruct(x, p)", "net = esae.export.load_base_model(\"cnn/base_model\")  # .encode(images)",
             "m = esae.export.load_m(\"cnn/m\")  # (256, 256)", "```", "", "| path | what |", "|---|---|"]
    for e in index["entries"]:
        what = (f"{e['name']} SAE, K = {e['k']}, {e['d_sae']} latents ({e['architecture']})" if e["kind"] == "sae"
                else {"base_model": "base autoencoder (chapter 3)", "m": "fitted M (chapter 4)"}[e["kind"]])
        lines.append(f"| `{e['path']}` | {what} |")
    for miss in index["missing"]:
        lines.append(f"| — | {miss['model']} {miss['what']}: not cached (chapter {miss['chapter']} makes it) |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ loading what was exported

def load_base_model(path: str | Path, device: torch.device | str = "cpu") -> torch.nn.Module:
    """An exported base autoencoder (eval mode): ``encode (n, 1, 64, 64) -> (n, 256)``."""
    from esae.autoencoders import build
    from safetensors.torch import load_file as load_tensors

    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    net = build(config["kind"])
    net.load_state_dict(load_tensors(path / "model.safetensors"))
    return net.to(device).eval()


def load_m(path: str | Path) -> torch.Tensor:
    """An exported M ``(d, d)`` (row-vector convention: ``ψ(g x) ≈ ψ(x) @ M.T``)."""
    from safetensors.torch import load_file as load_tensors

    return load_tensors(Path(path) / "m.safetensors")["m"]


def read_index(path: str | Path) -> dict[str, Any]:
    """The ``index.json`` of an export folder."""
    return json.loads((Path(path) / INDEX).read_text())


# ------------------------------------------------------------------ command line

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m esae export", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write (created; earlier exports are replaced)")
    parser.add_argument("--profile", default="default", choices=PROFILES)
    parser.add_argument("--models", nargs="+", default=list(BASE_MODELS), choices=BASE_MODELS)
    parser.add_argument("--layout", choices=("upright", "independent"), default=None,
                        help="dataset layout (default: the profile's)")
    parser.add_argument("--device", default="cpu", help="where --compute trains and the artifacts load: cpu, auto, cuda")
    parser.add_argument("--compute", action="store_true",
                        help="train/fit what the cache lacks, as the chapters would (default: export only what is cached)")
    args = parser.parse_args(argv)
    index = export_profile(args.profile, args.out, models=args.models, compute=args.compute, layout=args.layout,
                           device=args.device)
    print(f"[esae] exported {len(index['entries'])} folders to {args.out} (index: {args.out / INDEX})")
    for miss in index["missing"]:
        print(f"[esae] not exported: {miss['model']} {miss['what']} — no cached {miss['not_cached']}; run "
              f"`make chapter N={miss['chapter']} PROFILE={args.profile}` or pass --compute", file=sys.stderr)
    return 1 if index["missing"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
