"""SAE Match (chapter 7): folding, matching, composition, evaluations, Gemma Scope loading, the ΔL hook."""

import itertools
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sae_lens import JumpReLUSAE, StandardSAE, StandardSAEConfig

from esae import language_models as lms
from esae import jumprelu, lm_loss, match_evaluation, match_ground_truth
from esae import sae_match as sm
from esae.runtime import repo_root


def random_sae(d: int = 12, n_features: int = 40, seed: int = 0, dtype: str = "float64",
               apply_b_dec_to_input: bool = True) -> JumpReLUSAE:
    """Random weights; thresholds positive, zero (1/8) and negative (1/8)."""
    return match_ground_truth.random_jumprelu(d, n_features, seed=seed, dtype=dtype,
                                              apply_b_dec_to_input=apply_b_dec_to_input)


def inputs(d: int = 12, n: int = 500, seed: int = 1, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 3


# ----------------------------------------------------------------------------------- folding

@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_folding_preserves_outputs_exactly_with_zero_and_negative_thresholds(apply_b_dec):
    sae = random_sae(apply_b_dec_to_input=apply_b_dec)
    folded = sm.fold(sae)
    x = inputs()
    assert isinstance(folded, JumpReLUSAE) and folded is not sae
    torch.testing.assert_close(folded(x), sae(x), rtol=1e-12, atol=1e-11)
    assert torch.equal(folded.encode(x) > 0, sae.encode(x) > 0)
    assert sae.encode(x)[:, : 40 // 4].gt(0).any()  # the zero/negative-threshold features do fire
    positive = sae.threshold > 0
    assert torch.equal(folded.threshold, positive.double())
    assert folded.cfg.apply_b_dec_to_input is False
    torch.testing.assert_close(folded.b_dec, sae.b_dec)


def test_folding_float32_matches_to_float_precision():
    sae = random_sae(dtype="float32")
    x = inputs(dtype=torch.float32)
    out, ref = sm.fold(sae)(x), sae(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-3)


def test_folding_removes_the_per_feature_scale():
    sae = random_sae()
    scale = torch.exp(torch.randn(40, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    rescaled = sm.rescale_features(sae, scale)
    x = inputs()
    torch.testing.assert_close(rescaled(x), sae(x), rtol=1e-12, atol=1e-11)  # same function
    assert not torch.allclose(sm.feature_vectors(rescaled), sm.feature_vectors(sae))
    torch.testing.assert_close(sm.feature_vectors(sm.fold(rescaled)), sm.feature_vectors(sm.fold(sae)),
                               rtol=1e-10, atol=1e-12)
    # zero/negative-threshold features get the median folded decoder norm of the positive ones
    folded = sm.fold(sae)
    norms = folded.W_dec.norm(dim=1)
    relu_features = sae.threshold <= 0
    torch.testing.assert_close(norms[relu_features], norms[~relu_features].median().expand(int(relu_features.sum())))


# ----------------------------------------------------------------------------------- matching

def test_permuted_copy_is_recovered_exactly():
    sae = random_sae(n_features=64)
    copy_, truth = match_ground_truth.perturbed_copy(sae, noise=0.0, scale_spread=10.0, seed=0)
    x = inputs()
    torch.testing.assert_close(copy_(x), sae(x), rtol=1e-12, atol=1e-11)
    m = sm.match(sae, copy_)
    assert m.permutation.dtype == np.int64 and m.permutation.shape == (64,) and m.cost.shape == (64,)
    np.testing.assert_array_equal(m.permutation, truth)
    assert match_ground_truth.recovery(m, truth) == 1.0
    assert m.cost.max() < 1e-18
    # moving A's feature activations along the match gives B's activations
    torch.testing.assert_close(m.transfer(sm.fold(sae).encode(x)), sm.fold(copy_).encode(x), rtol=1e-10, atol=1e-10)
    # unfolded matching is fooled by the rescaling that folding removes
    assert match_ground_truth.recovery(sm.match(sae, copy_, fold=False), truth) < 1.0


def test_noisy_copy_is_still_recovered_with_folding():
    sae = random_sae(n_features=64)
    copy_, truth = match_ground_truth.perturbed_copy(sae, noise=0.1, scale_spread=10.0, seed=1)
    assert match_ground_truth.recovery(sm.match(sae, copy_), truth) == 1.0
    for weights in ("decoder", "encoder"):
        assert match_ground_truth.recovery(sm.match(sae, copy_, weights=weights), truth) > 0.9


def test_composition_equals_direct_match_for_permuted_copies():
    a = random_sae(n_features=48, seed=4)
    b, _ = match_ground_truth.perturbed_copy(a, scale_spread=5.0, seed=5)
    c, _ = match_ground_truth.perturbed_copy(b, scale_spread=5.0, seed=6)
    d, _ = match_ground_truth.perturbed_copy(c, scale_spread=5.0, seed=7)
    ab, bc, cd = sm.match(a, b), sm.match(b, c), sm.match(c, d)
    np.testing.assert_array_equal(sm.compose(ab, bc).permutation, sm.match(a, c).permutation)
    np.testing.assert_array_equal(sm.chain([ab, bc, cd]).permutation, sm.match(a, d).permutation)
    composed = sm.compose(ab, bc)
    np.testing.assert_allclose(composed.cost, ab.cost + bc.cost[ab.permutation])
    assert sm.compose(ab, ab.inverse()).permutation.tolist() == list(range(48))


def test_match_is_the_exact_optimum():
    a, b = random_sae(d=4, n_features=6, seed=8), random_sae(d=4, n_features=6, seed=9)
    va, vb = sm.feature_vectors(sm.fold(a)), sm.feature_vectors(sm.fold(b))
    best = min(itertools.permutations(range(6)), key=lambda p: float((va - vb[list(p)]).pow(2).sum()))
    m = sm.match(a, b)
    assert m.permutation.tolist() == list(best)
    np.testing.assert_allclose(m.cost, (va - vb[list(best)]).pow(2).sum(1).numpy())


def test_cost_matrix_in_blocks_equals_direct_distances():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(37, 9, generator=g, dtype=torch.float64), torch.randn(37, 9, generator=g, dtype=torch.float64)
    direct = torch.cdist(a, b).pow(2).numpy()
    for block in (1, 5, 37, 100):
        np.testing.assert_allclose(sm.cost_matrix(a, b, block_size=block, dtype=torch.float64), direct,
                                   rtol=1e-10, atol=1e-10)


def test_clear_errors():
    a = random_sae(d=12, n_features=40)
    with pytest.raises(ValueError, match="solver must be 'exact' for SAEs of different widths .*got 'sparse'"):
        sm.match(a, random_sae(d=12, n_features=32), solver="sparse")
    with pytest.raises(ValueError, match=r"same size \(d_in\), got 12 and 10"):
        sm.match(a, random_sae(d=10, n_features=40))
    with pytest.raises(ValueError, match="weights must be one of 'decoder', 'encoder', 'all', got 'bias'"):
        sm.match(a, a, weights="bias")
    standard = StandardSAE(StandardSAEConfig(d_in=12, d_sae=40))
    with pytest.raises(TypeError, match="sae must be a sae_lens JumpReLUSAE"):
        sm.fold(standard)
    with pytest.raises(TypeError, match="sae_b must be a sae_lens JumpReLUSAE, TopKSAE or StandardSAE.*got Linear"):
        sm.match(a, torch.nn.Linear(12, 40))
    with pytest.raises(ValueError, match="permutation must be a permutation of 0..2"):
        sm.Match(np.array([0, 0, 1]), np.zeros(3))
    with pytest.raises(ValueError, match="same size to compose, got 3 and 2"):
        sm.compose(sm.Match(np.arange(3), np.zeros(3)), sm.Match(np.arange(2), np.zeros(2)))
    with pytest.raises(ValueError, match="at least one Match"):
        sm.chain([])


# ----------------------------------------------------------------------------------- evaluations

@pytest.fixture(scope="module")
def copy_stack():
    """Three "layers" that are permuted, rescaled copies of one SAE, and activations shared by them."""
    a = random_sae(n_features=32, seed=11)
    b, _ = match_ground_truth.perturbed_copy(a, scale_spread=4.0, seed=12)
    c, _ = match_ground_truth.perturbed_copy(b, scale_spread=4.0, seed=13)
    x = inputs(n=800, seed=2)
    return match_evaluation.match_stack([a, b, c], [0, 1, 2]), torch.stack([x, x, x])


def test_evaluations_on_copies_show_perfect_transfer(copy_stack, one_thread):
    stack, acts = copy_stack
    assert stack.pairs == ["0-1", "1-2"]
    mse = match_evaluation.mse_table(stack)
    for pair in stack.pairs:
        assert mse[pair]["folded"]["all"] < 1e-20 < mse[pair]["vanilla"]["all"]
    ev = match_evaluation.hidden_state_ev(stack, acts)
    for pair in stack.pairs:
        assert ev[pair]["folded/folded"] == pytest.approx(ev[pair]["own"], abs=1e-9)
        assert ev[pair]["layer_drop"] == pytest.approx(1.0)
    partial = match_evaluation.partial_matching_ev(stack, acts, (0.5, 1.0))
    assert partial["0-1"]["1.0"] == pytest.approx(ev["0-1"]["folded/folded"], abs=1e-6)
    scores = match_evaluation.matching_scores(stack, acts.float())
    assert scores["0-1"]["folded"]["cofire"] == pytest.approx(1.0)
    assert scores["0-1"]["folded"]["correlation"] == pytest.approx(1.0, abs=1e-6)
    pers = match_evaluation.persistence(stack, acts.float(), 2, starts=[0])
    assert pers[2]["agreement"] == 1.0 and pers[1]["agreement"] == 1.0
    stats = match_evaluation.layer_statistics(stack.saes, stack.layers, acts)
    assert set(stats) == {0, 1, 2} and stats[0]["norm"] > 0
    examples = match_evaluation.feature_examples(stack, 0, acts.float(), n_pairs=2, top_k=3, min_fires=1)
    assert len(examples["low"]) == 2 and len(examples["low"][0]["top_a"]) == 3


@pytest.fixture
def one_thread():
    """Small SAE steps are dominated by thread synchronisation on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_train_jumprelu_returns_a_gemma_scope_style_sae(one_thread):
    g = torch.Generator().manual_seed(0)
    directions = torch.nn.functional.normalize(torch.randn(24, 16, generator=g), dim=1)
    codes = (torch.rand(3000, 24, generator=g) < 0.1) * torch.rand(3000, 24, generator=g) * 50
    data = codes @ directions + 7.0
    sae = jumprelu.train_jumprelu(data, jumprelu.TrainConfig(d_sae=24, target_l0=2.4, steps=150, batch_size=128, lr=3e-3))
    assert isinstance(sae, JumpReLUSAE) and sae.cfg.apply_b_dec_to_input is False
    quality = jumprelu.sae_quality(sae, data)
    assert quality["explained_variance"] > 0.5 and 0.5 < quality["l0"] < 12
    with pytest.raises(ValueError, match="target_l0 must be a number in"):
        jumprelu.TrainConfig(d_sae=8, target_l0=9.0)


# ----------------------------------------------------------------------------------- language models

@pytest.fixture(scope="module")
def tiny():
    model, tokenizer = lms.load_model("tiny-random")
    ids = lms.token_windows(tokenizer, [("doc", "def f(x):\n    return x + 1\n" * 20)], 24)[:3]
    return model, ids


def test_identity_hook_leaves_the_loss_unchanged(tiny):
    model, ids = tiny
    clean = lm_loss.next_token_losses(model, ids)
    with torch.no_grad():
        logits = model(ids).logits
    ref = F.cross_entropy(logits[:, 1:-1].flatten(0, 1), ids[:, 2:].flatten(), reduction="none").view(3, -1)
    torch.testing.assert_close(clean, ref, rtol=1e-5, atol=1e-5)
    for layer in range(len(lms.blocks(model))):
        assert torch.equal(lm_loss.next_token_losses(model, ids, layer=layer, edit=lambda x_in, x_out: x_out), clean)
    dropped = lm_loss.next_token_losses(model, ids, layer=2, edit=lambda x_in, x_out: x_in)
    assert not torch.equal(dropped, clean)
    with pytest.raises(ValueError, match="layer and edit must be given together"):
        lm_loss.next_token_losses(model, ids, layer=1)


def test_residuals_are_block_outputs_without_bos(tiny):
    model, ids = tiny
    res = lms.collect_residuals(model, ids, batch_size=2)
    assert res.shape == (4, 3 * 23, 64)
    with torch.no_grad():
        hidden = model.model(input_ids=ids, output_hidden_states=True).hidden_states
    # hidden_states[t + 1] is block t's output (the last one is after the final norm)
    for t in range(3):
        torch.testing.assert_close(res[t], hidden[t + 1][:, 1:].reshape(-1, 64))
    assert ids[:, 0].eq(lms.ByteTokenizer.bos_token_id).all()


def test_corpus_split_is_disjoint_and_deterministic():
    docs = lms.corpus_documents()
    assert len(docs) > 100 and any(name.startswith("topic:") for name, _ in docs)
    train, heldout = lms.split_documents(docs, 0.2, seed=0)
    assert {n for n, _ in train}.isdisjoint({n for n, _ in heldout})
    assert len(train) + len(heldout) == len(docs)
    assert lms.split_documents(docs, 0.2, seed=0)[1] == heldout


GEMMA_SCOPE_LOAD = textwrap.dedent("""
    import json, sys, torch
    from esae.language_models import load_gemma_scope
    from esae import sae_match as sm
    saes = load_gemma_scope([3])
    out = {"types": [type(s).__name__ for s in saes], "shapes": [list(s.W_dec.shape) for s in saes],
           "w_dec_00": [float(s.W_dec[0, 0]) for s in saes], "threshold_1": [float(s.threshold[1]) for s in saes],
           "apply_b_dec": [s.cfg.apply_b_dec_to_input for s in saes],
           "fold_threshold_1": float(sm.fold(saes[0]).threshold[1])}
    try:
        load_gemma_scope([4])
        out["offline_miss"] = "loaded"
    except Exception as err:
        out["offline_miss"] = type(err).__name__
    print(json.dumps(out))
""")


def test_gemma_scope_loads_offline_from_a_fake_hub_cache(tmp_path):
    """The paper profile's loading path (sae-lens's canonical Gemma Scope release) against a
    hub cache laid out like Gemma Scope's: one params.npz per layer, read with HF_HUB_OFFLINE=1."""
    from sae_lens.loading.pretrained_saes_directory import get_repo_id_and_folder_name

    d, n_features = 2304, 16384
    snapshot = "0" * 40
    values = {}
    for layer in (3,):
        repo, folder = get_repo_id_and_folder_name(lms.GEMMA_SCOPE_RELEASE, f"layer_{layer}/width_16k/canonical")
        repo_dir = tmp_path / "hub" / f"models--{repo.replace('/', '--')}"
        target = repo_dir / "snapshots" / snapshot / folder
        target.mkdir(parents=True)
        (repo_dir / "refs").mkdir(exist_ok=True)
        (repo_dir / "refs" / "main").write_text(snapshot)
        w_dec = np.zeros((n_features, d), np.float32)  # mostly zero, so the file stays small
        w_dec[0, 0] = 0.5 + layer
        threshold = np.zeros(n_features, np.float32)
        threshold[1] = 2.0 + layer
        np.savez_compressed(target / "params.npz", W_enc=np.zeros((d, n_features), np.float32), W_dec=w_dec,
                            b_enc=np.zeros(n_features, np.float32), b_dec=np.zeros(d, np.float32),
                            threshold=threshold)
        values[layer] = (0.5 + layer, 2.0 + layer)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"),
           "HF_HOME": str(tmp_path / "hf_home"), "PYTHONPATH": str(repo_root())}
    proc = subprocess.run([sys.executable, "-c", GEMMA_SCOPE_LOAD], env=env, capture_output=True, text=True,
                          timeout=300, cwd=repo_root())
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["types"] == ["JumpReLUSAE"]
    assert out["shapes"] == [[n_features, d]]
    assert out["w_dec_00"] == [values[3][0]]
    assert out["threshold_1"] == [values[3][1]]
    assert out["apply_b_dec"] == [False]
    assert out["fold_threshold_1"] == 1.0
    assert out["offline_miss"] != "loaded"
