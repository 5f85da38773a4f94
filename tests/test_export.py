"""``python -m esae export``: a profile's SAEs as named sae-lens folders that plain
``sae_lens.SAE.load_from_disk`` loads in a fresh process importing only ``esae``."""

import json
import os
import subprocess
import sys

import pytest
import torch

from esae import export
from esae.runtime import repo_root

ROOT = repo_root()


def _env(**extra):
    return {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg", **extra}


def test_cold_cache_exports_nothing_computes_nothing_and_says_what_is_missing(tmp_path):
    cache = tmp_path / "cache"
    proc = subprocess.run([sys.executable, "-m", "esae", "export", "--profile", "smoke", str(tmp_path / "out")],
                          capture_output=True, text=True, env=_env(ESAE_CACHE=str(cache)), cwd=ROOT)
    assert proc.returncode == 1, proc.stderr
    assert "not exported: mlp base_model" in proc.stderr and "make chapter N=03 PROFILE=smoke" in proc.stderr
    assert "--compute" in proc.stderr
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index["entries"] == [] and {m["model"] for m in index["missing"]} == {"mlp", "cnn"}
    assert not any(p.is_file() for p in cache.rglob("*")), "a cold export must not compute anything"


def test_command_line_refuses_bad_arguments(capsys):
    from esae.__main__ import main

    assert main(["nope"]) == 2
    assert "command must be one of export, book, sae-match, got 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", "--profile", "huge", "out"])


def test_import_esae_alone_registers_the_architectures_without_loading_sae_lens():
    code = ("import sys, esae; assert 'sae_lens' not in sys.modules; from sae_lens import registry; "
            "print(sorted(a for a in registry.SAE_CLASS_REGISTRY if a in ('two_layer_topk', 'equivariant_topk')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), check=True).stdout
    assert out.strip() == "['equivariant_topk', 'two_layer_topk']"


LOADER = """
import sys, torch
import esae  # registration only
from sae_lens import SAE
x = torch.load(sys.argv[1])
out = {}
for path in sys.argv[3:]:
    sae = SAE.load_from_disk(path, device="cpu").eval()
    with torch.no_grad():
        z = sae.encode(x)
        out[path] = {"z": z, "xhat": sae.decode(z), "class": type(sae).__name__}
        if hasattr(sae, "reconstruct"):
            out[path]["equivariant"] = sae.reconstruct(x, torch.arange(len(x)) % 4)
torch.save(out, sys.argv[2])
"""


@pytest.mark.slow
def test_exported_saes_load_with_plain_sae_lens_and_give_identical_outputs(smoke_book, tmp_path):
    from esae import saes

    out = tmp_path / "export"
    index = export.export_profile("smoke", out)
    assert index["missing"] == []
    sae_entries = [e for e in index["entries"] if e["kind"] == "sae"]
    from esae import pipeline
    from esae.params import resolved_parameters

    smoke = {stem: resolved_parameters(stem, "smoke") for stem in ("02_dataset", "03_base_models", "04_fitting_m",
                                                                    "05_equivariant_sae")}
    layout = pipeline.dataset_layout(smoke["02_dataset"])
    bases = pipeline.base_model_configs(smoke["03_base_models"], layout)
    fits = pipeline.fit_configs(smoke["04_fitting_m"])
    ks = pipeline.sae_configs(smoke["05_equivariant_sae"], layout)
    expected_names = {(m, n, k) for m in ("mlp", "cnn") for n in saes.SAE_NAMES for (_, k) in ks}
    assert {(e["model"], e["name"], e["k"]) for e in sae_entries} == expected_names
    for e in sae_entries:
        folder = out / e["path"]
        assert e["path"] == f"{e['model']}/{e['name']}/k{e['k']}"
        assert (folder / "cfg.json").is_file() and (folder / "sae_weights.safetensors").is_file()
        assert json.loads((folder / "esae.json").read_text())["train_config"]["k"] == e["k"]
    assert {e["architecture"] for e in sae_entries} == {"topk", "two_layer_topk", "equivariant_topk"}

    x = torch.randn(24, 256, generator=torch.Generator().manual_seed(0))
    torch.save(x, tmp_path / "x.pt")
    paths = [str(out / e["path"]) for e in sae_entries]
    subprocess.run([sys.executable, "-c", LOADER, str(tmp_path / "x.pt"), str(tmp_path / "y.pt"), *paths],
                   check=True, env=_env(), cwd=tmp_path)
    loaded = torch.load(tmp_path / "y.pt")
    for model in ("mlp", "cnn"):
        for (name, k), sae in pipeline.load_saes(bases[model], ks, fits, "cpu").items():
            got = loaded[str(out / f"{model}/{name}/k{k}")]
            assert got["class"] == type(sae).__name__
            with torch.no_grad():
                z = sae.encode(x)
                assert torch.equal(got["z"], z) and torch.equal(got["xhat"], sae.decode(z))
                if name == "equivariant":
                    assert torch.equal(got["equivariant"], sae.reconstruct(x, torch.arange(len(x)) % 4))

    nets = pipeline.base_models(bases, "cpu")
    images = torch.rand(4, 1, 64, 64)
    for model in ("mlp", "cnn"):
        with torch.no_grad():
            assert torch.equal(export.load_base_model(out / model / "base_model").encode(images), nets[model].encode(images))
        assert torch.equal(export.load_m(out / model / "m"), pipeline.fitted_m(bases[model], fits, "cpu"))
    assert "cnn/equivariant/k16" in (out / "README.md").read_text()
