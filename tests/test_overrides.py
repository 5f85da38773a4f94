"""A chapter's injected parameters are the truth (issue 14): ``papermill -f <profile's parameters>
-p name value`` on chapters 3-6 changes the numbers in ``results/<profile>/<stem>.json`` and records
the override; a bad ``-p`` value stops with the parameter's name before any work."""

import json

import pytest
import yaml

from esae import book
from esae.runtime import repo_root

ROOT = repo_root()

# chapter -> (overridden parameter, value, a result entry that must change)
OVERRIDES = {
    "03_base_models": ("mlp_epochs", 1, ("test_mse", "mlp")),
    "04_fitting_m": ("epochs", 1, None),
    "05_equivariant_sae": ("n_epochs", 1, None),
    "06_probing": ("n_test", 120, None),
}


def _papermill(stem, parameters, tmp_path):
    import jupytext
    import papermill

    source = tmp_path / f"{stem}.ipynb"
    jupytext.write(jupytext.read(ROOT / "notebooks" / f"{stem}.py"), source)
    papermill.execute_notebook(str(source), str(tmp_path / f"{stem}-out.ipynb"), parameters=parameters,
                               cwd=str(ROOT), progress_bar=False, kernel_name="python3")


def _flat(stem, tmp_path):
    path = tmp_path / f"{stem}.yaml"
    book.write_params(stem[:2], "smoke", path)
    return yaml.safe_load(path.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("stem", list(OVERRIDES))
def test_papermill_overrides_change_the_results(stem, smoke_book, tmp_path, monkeypatch):
    workspace, _ = smoke_book
    monkeypatch.setenv("ESAE_RESULTS", str(tmp_path / "results"))  # the smoke book's results stay
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("ESAE_PROGRESS", "0")
    name, value, entry = OVERRIDES[stem]
    _papermill(stem, {**_flat(stem, tmp_path), name: value}, tmp_path)
    ours = json.loads((tmp_path / "results" / "smoke" / f"{stem}.json").read_text())
    runner = json.loads((workspace / "results" / "smoke" / f"{stem}.json").read_text())
    assert ours.pop("overrides") == {name: value}
    assert "overrides" not in runner
    assert ours != runner, f"-p {name} {value} left {stem}'s results unchanged"
    if entry is not None:
        a, b = ours, runner
        for key in entry:
            a, b = a[key], b[key]
        assert a != b


@pytest.mark.slow
@pytest.mark.parametrize("stem,name,value,message", [
    ("04_fitting_m", "lr", 5.0, r"lr must be in \(0.0, 1.0\], got 5.0"),
    ("03_base_models", "mlp_epochs", -1, r"mlp_epochs must be >= 1, got -1"),
    ("05_equivariant_sae", "batch_size", 0, r"batch_size must be >= 1, got 0"),
    ("06_probing", "figure3_ks", [64], r"figure3_ks must be a subset of 05_equivariant_sae's ks \[8, 16, 32\]"),
])
def test_a_bad_papermill_value_stops_with_the_parameters_name(stem, name, value, message, tmp_path, monkeypatch):
    import papermill

    monkeypatch.setenv("ESAE_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("ESAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    with pytest.raises(papermill.PapermillExecutionError, match=message):
        _papermill(stem, {**_flat(stem, tmp_path), name: value}, tmp_path)
    assert not (tmp_path / "results" / "smoke").exists()
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.pt"))
