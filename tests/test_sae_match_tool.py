"""SAE Match as a tool (issue 17): Match.save/load, different widths, TopK and standard SAEs, the CLI."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from sae_lens import StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig

from esae import match_ground_truth
from esae import sae_match as sm
from esae.runtime import repo_root


def subset_pair(d: int = 16, wide: int = 512, narrow: int = 256, seed: int = 0):
    """A JumpReLU SAE of width ``wide`` and one of width ``narrow`` whose feature ``i`` is the
    wide SAE's feature ``idx[i]`` (same function on those features); returns (narrow, wide, idx)."""
    big = match_ground_truth.random_jumprelu(d, wide, seed=seed)
    idx = np.random.default_rng(seed).choice(wide, narrow, replace=False)
    t = torch.as_tensor(idx)
    small = sm.build_jumprelu(big, W_enc=big.W_enc[:, t], b_enc=big.b_enc[t], threshold=big.threshold[t],
                              W_dec=big.W_dec[t], b_dec=big.b_dec, d_sae=narrow)
    return small, big, idx


# ----------------------------------------------------------------------------------- save / load

def test_save_load_round_trip_square(tmp_path):
    a = match_ground_truth.random_jumprelu(8, 40, seed=0)
    perm = np.random.default_rng(1).permutation(40)
    m = sm.match(a, sm.permute_features(a, perm), weights="decoder")
    path = m.save(tmp_path / "sub" / "m.json", {"layers": ["blocks.0", "blocks.1"]})
    assert sorted(os.listdir(tmp_path / "sub")) == ["m.json", "m.npz"]  # no temporary files left
    back = sm.Match.load(path)
    np.testing.assert_array_equal(back.permutation, m.permutation)
    np.testing.assert_array_equal(back.cost, m.cost)
    assert (back.folded, back.weights, back.width_b, back.rectangular) == (True, "decoder", None, False)
    header = sm.Match.read_header(path)
    assert header["format"] == "esae.sae_match.Match" and header["version"] == 1
    assert (header["width_a"], header["width_b"], header["n_matched"]) == (40, 40, 40)
    assert header["metadata"] == {"layers": ["blocks.0", "blocks.1"]}
    assert header["arrays"] == "m.npz"


def test_save_load_round_trip_rectangular(tmp_path):
    small, big, _ = subset_pair(d=8, wide=24, narrow=10)
    m = sm.match(big, small, fold=False)
    back = sm.Match.load(m.save(tmp_path / "m.json"))
    np.testing.assert_array_equal(back.permutation, m.permutation)
    np.testing.assert_array_equal(back.cost, m.cost)  # nan where unmatched, equal_nan by default
    assert (back.widths, back.folded, back.weights) == ((24, 10), False, "all")


def test_save_load_errors(tmp_path):
    m = sm.Match(np.arange(3), np.zeros(3))
    with pytest.raises(ValueError, match="path must end in .json, got .*m.npy"):
        m.save(tmp_path / "m.npy")
    with pytest.raises(FileNotFoundError, match="path must be a match saved by Match.save"):
        sm.Match.load(tmp_path / "missing.json")
    (tmp_path / "other.json").write_text(json.dumps({"format": "something", "version": 1}))
    with pytest.raises(ValueError, match="must be format 'esae.sae_match.Match' version 1, got 'something'"):
        sm.Match.load(tmp_path / "other.json")


# ----------------------------------------------------------------------------------- widths

@pytest.mark.parametrize("fold", [True, False])
def test_match_across_widths_recovers_a_known_subset(fold):
    small, big, idx = subset_pair()  # 256 <-> 512
    m = sm.match(small, big, fold=fold)
    assert m.rectangular and m.widths == (256, 512)
    np.testing.assert_array_equal(m.permutation, idx)
    # folding scales threshold <= 0 (plain ReLU) features to the median folded decoder norm of the
    # SAE's own features, which differs between the subset and the whole: only those may cost > 0
    exact = (small.threshold > 0).numpy() if fold else np.ones(256, bool)
    assert np.allclose(m.cost[exact], 0, atol=1e-9) and exact.sum() > 128
    # the other way round: every feature of the smaller SAE (now B) gets its partner, the rest -1
    r = sm.match(big, small, fold=fold)
    assert r.widths == (512, 256)
    expected = np.full(512, -1)
    expected[idx] = np.arange(256)
    np.testing.assert_array_equal(r.permutation, expected)
    assert np.isnan(r.cost[expected < 0]).all()
    np.testing.assert_allclose(r.cost[idx], m.cost, atol=1e-9)
    np.testing.assert_array_equal(r.inverse().permutation, m.permutation)
    np.testing.assert_array_equal(m.inverse().permutation, r.permutation)


def test_match_across_widths_4k_8k():
    """The issue's sizes: a 4,096-latent SAE inside an 8,192-latent one (small d_model keeps it to seconds)."""
    small, big, idx = subset_pair(d=8, wide=8192, narrow=4096)
    m = sm.match(small, big)
    assert m.widths == (4096, 8192)
    np.testing.assert_array_equal(m.permutation, idx)
    r = sm.match(big, small)
    assert (r.permutation >= 0).sum() == 4096
    np.testing.assert_array_equal(r.permutation[idx], np.arange(4096))


def test_rectangular_transfer_and_compose():
    small, big, idx = subset_pair(d=8, wide=24, narrow=10)
    m = sm.match(small, big)
    x = torch.randn(5, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(big.decode(m.transfer(small.encode(x))), small.decode(small.encode(x)))
    wide_acts = m.inverse().transfer(big.encode(x))
    torch.testing.assert_close(wide_acts, small.encode(x))
    with pytest.raises(ValueError, match=r"match_ab must be a one-to-one match .*widths \(10, 24\)"):
        sm.compose(m, sm.Match(np.arange(10), np.zeros(10)))
    with pytest.raises(ValueError, match=r"match_bc must be a one-to-one match .*widths \(24, 10\)"):
        sm.chain([sm.Match(np.arange(24), np.zeros(24)), m.inverse()])
    assert m.agreement(m) == 1.0
    with pytest.raises(ValueError, match=r"same widths, got \(10, 24\) and \(10, 10\)"):
        m.agreement(sm.Match(np.arange(10), np.zeros(10)))
    with pytest.raises(ValueError, match=r"distinct partner indices in 0..23 or -1"):
        sm.Match(np.array([0, 0, 1]), np.zeros(3), width_b=24)
    with pytest.raises(ValueError, match=r"must match min\(F_a, F_b\) = 3 features, got 2"):
        sm.Match(np.array([0, -1, 1]), np.zeros(3), width_b=24)


# ----------------------------------------------------------------------------------- TopK / standard

def shuffled(sae, perm):
    """A copy of a TopK / standard sae-lens SAE with features reordered (new j = old perm[j])."""
    out = type(sae)(sae.cfg)
    p = torch.as_tensor(perm)
    state = {k: v.clone() for k, v in sae.state_dict().items()}
    state.update(W_enc=sae.W_enc[:, p], b_enc=sae.b_enc[p], W_dec=sae.W_dec[p])
    out.load_state_dict(state)
    return out


@pytest.mark.parametrize("kind", ["topk", "standard"])
def test_topk_and_standard_saes_match_a_shuffled_copy(kind):
    torch.manual_seed(0)
    sae = (TopKSAE(TopKSAEConfig(d_in=16, d_sae=64, k=4, apply_b_dec_to_input=True)) if kind == "topk"
           else StandardSAE(StandardSAEConfig(d_in=16, d_sae=64)))
    with torch.no_grad():
        sae.b_enc.normal_()
        sae.b_dec.normal_()
    perm = np.random.default_rng(2).permutation(64)
    copy_ = shuffled(sae, perm)
    x = torch.randn(7, 16)
    torch.testing.assert_close(copy_.encode(x), sae.encode(x)[:, perm])
    truth = np.argsort(perm)  # feature i of sae is feature truth[i] of the copy
    folded, unfolded = sm.match(sae, copy_), sm.match(sae, copy_, fold=False)
    np.testing.assert_array_equal(folded.permutation, truth)
    np.testing.assert_array_equal(unfolded.permutation, truth)
    np.testing.assert_array_equal(folded.cost, unfolded.cost)  # folding is the identity without thresholds
    vec = sm.feature_vectors(sae, "all", folded=True)
    assert torch.equal(vec, sm.feature_vectors(sae, "all", folded=False)) and vec.shape == (64, 33)


# ----------------------------------------------------------------------------------- CLI

def test_cli_on_sae_folders(tmp_path):
    small, big, idx = subset_pair(d=8, wide=48, narrow=32)
    third = sm.permute_features(big, np.random.default_rng(3).permutation(48))
    dirs = [tmp_path / "saes" / name for name in ("layer_0", "layer_1", "layer_2")]
    for sae, path in zip((small, big, third), dirs):
        sae.save_model(str(path))
    out = tmp_path / "matches"
    cmd = [sys.executable, "-m", "esae.sae_match", *map(str, dirs), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(repo_root())}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("layer_0 -> layer_1: 32 x 48 features, 32 matched")
    m01 = sm.Match.load(out / "layer_0--layer_1.json")
    np.testing.assert_array_equal(m01.permutation, idx)
    m12 = sm.Match.load(out / "layer_1--layer_2.json")
    assert m12.widths == (48, 48) and m12.folded and m12.weights == "all"
    assert sm.Match.read_header(out / "layer_0--layer_1.json")["metadata"]["a"] == str(dirs[0])
    # resumable: existing pairs are skipped; a different --weights into the same folder is refused
    lines = []
    assert sm.main([*map(str, dirs), "--out", str(out)]) == 0
    written = sm.match_folders(dirs, out, log=lines.append)
    assert len(written) == 2 and all("exists, skipped" in line for line in lines)
    with pytest.raises(ValueError, match="exists with fold=True, weights='all'; got fold=True, weights='decoder'"):
        sm.match_folders(dirs, out, weights="decoder", log=lines.append)
    with pytest.raises(FileNotFoundError, match="each path must be an sae-lens SAE folder"):
        sm.match_folders([dirs[0], tmp_path / "nothing"], out)
    assert sm.main([str(dirs[0]), str(tmp_path / "nothing"), "--out", str(out)]) == 2  # one-line error


def test_cli_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        sm.main(["a", "b", "--out", "o", "--weights", "bias"])
    assert "invalid choice: 'bias' (choose from 'decoder', 'encoder', 'all')" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sm.main(["a", "--out", "o"])
    assert "SAE_DIR must be given at least twice (a pair to match), got 1" in capsys.readouterr().err


def test_cli_release_fails_in_one_line_when_not_cached(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(repo_root()), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    cmd = [sys.executable, "-m", "esae.sae_match", "--release", "gemma-scope-2b-pt-res-canonical", "--layers", "0-1",
           "--out", str(tmp_path / "out")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: could not load SAE 'layer_0/width_16k/canonical' of "
                                                   "release 'gemma-scope-2b-pt-res-canonical'"), proc.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_parse_layers():
    assert sm.parse_layers("0-3") == [0, 1, 2, 3]
    assert sm.parse_layers("0-2,7") == [0, 1, 2, 7]
    for bad in ("5", "a-b", "-1,2"):
        with pytest.raises(ValueError, match=f"layers must name at least two layers >= 0 .*got '{bad}'"):
            sm.parse_layers(bad)
