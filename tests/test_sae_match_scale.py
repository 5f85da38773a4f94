"""SAE Match at the paper's scale and under the paper's comparison: the raw-unit Figure 2 scenario,
the sparse assignment, the data-based reference, cost shares, ΔL with bootstrap intervals and the
gated-model message."""

import numpy as np
import pytest
import torch
from huggingface_hub.errors import GatedRepoError
from scipy.optimize import linear_sum_assignment

from esae import assignment
from esae import language_models as lms
from esae import jumprelu, lm_loss, match_evaluation, match_ground_truth
from esae import sae_match as sm


def test_figure2_scenario_folded_recovers_and_unfolded_all_weights_fails():
    a, b, truth = match_ground_truth.growing_norm_pair(d=64, d_sae=256, norm=50.0, growth=2.0, seed=3)
    x = torch.randn(200, 64, dtype=torch.float64) * 50
    assert torch.equal(sm.fold(a)(x), sm.fold(a)(x))  # raw-unit SAEs fold like any other
    assert match_ground_truth.recovery(sm.match(a, b, fold=True), truth) >= 0.99
    unfolded = match_ground_truth.recovery(sm.match(a, b, fold=False), truth)
    assert unfolded < 0.5  # matches on b_enc, which carries the stream's scale
    assert match_evaluation.cost_shares(a, b, fold=False)["b_enc"] > 0.9
    assert match_evaluation.cost_shares(a, b, fold=True)["W_dec"] > 0.5


def test_cost_shares_over_all_candidate_pairs_equal_brute_force():
    a, b = match_ground_truth.random_jumprelu(6, 10, seed=1), match_ground_truth.random_jumprelu(6, 10, seed=2)
    shares = match_evaluation.cost_shares(a, b, fold=True)
    va, vb = sm.feature_vectors(a, folded=True), sm.feature_vectors(b, folded=True)
    parts = {"W_dec": slice(0, 6), "W_enc": slice(6, 12), "b_enc": slice(12, 13)}
    brute = {p: float(torch.cdist(va[:, sl], vb[:, sl]).pow(2).sum()) for p, sl in parts.items()}
    total = sum(brute.values())
    for p in parts:
        assert shares[p] == pytest.approx(brute[p] / total, rel=1e-9)
    matched = match_evaluation.cost_shares(a, b, fold=True, permutation=np.arange(10))
    assert sum(matched.values()) == pytest.approx(1.0)


def test_unit_decoder_rows_keep_the_function():
    sae = match_ground_truth.random_jumprelu(12, 40, seed=5, apply_b_dec_to_input=False)
    unit = jumprelu.unit_decoder_rows(sae)
    x = torch.randn(300, 12, dtype=torch.float64) * 3
    torch.testing.assert_close(unit(x), sae(x), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(unit.W_dec.norm(dim=1), torch.ones(40, dtype=torch.float64))


def test_sparse_assignment_is_exact_when_the_knn_graph_holds_the_optimum():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, 20, generator=g, dtype=torch.float64)
    perm_true = torch.randperm(300, generator=g)
    b = torch.empty_like(a)
    b[perm_true] = a + 0.05 * torch.randn(a.shape, generator=g, dtype=torch.float64)
    exact = assignment.exact_assignment(a, b)
    rows, cols, products = assignment.knn_candidates(a, b, 4, dtype=torch.float64)
    assert np.all(np.diff(rows * 300 + cols) > 0)  # sorted, no duplicates
    np.testing.assert_allclose(products, (a[rows] * b[cols]).sum(1).numpy(), rtol=1e-5, atol=1e-5)
    assert np.isin(np.arange(300) * 300 + exact, rows * 300 + cols).all()  # the optimum is among the candidates
    sparse = assignment.sparse_assignment(a, b, k=4)
    np.testing.assert_array_equal(sparse, exact)
    assert assignment.assignment_gap(a, b, sparse, exact) == 0.0


def test_sparse_assignment_is_a_permutation_with_a_small_gap_on_unrelated_vectors():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(400, 30, generator=g), torch.randn(400, 30, generator=g)
    sparse = assignment.sparse_assignment(a, b, k=8)
    assert sorted(sparse.tolist()) == list(range(400))
    gap = assignment.assignment_gap(a, b, sparse, assignment.exact_assignment(a, b))
    assert 0.0 <= gap < 0.01
    with pytest.raises(ValueError, match="solver must be one of 'exact', 'sparse', got 'hungarian'"):
        assignment.assign(a, b, "hungarian")


def test_match_with_the_sparse_solver_recovers_a_perturbed_copy():
    sae = match_ground_truth.random_jumprelu(16, 128, seed=4)
    copy_, truth = match_ground_truth.perturbed_copy(sae, noise=0.05, scale_spread=10.0, seed=1)
    m = sm.match(sae, copy_, solver="sparse", k=8)
    assert match_ground_truth.recovery(m, truth) == 1.0
    np.testing.assert_array_equal(m.permutation, sm.match(sae, copy_).permutation)


@pytest.mark.parametrize("solver", ["exact", "sparse"])
def test_data_match_recovers_a_planted_permutation(solver):
    g = torch.Generator().manual_seed(2)
    z_a = torch.relu(torch.randn(2000, 50, generator=g))
    perm = torch.randperm(50, generator=g)
    z_b = torch.empty_like(z_a)
    z_b[:, perm] = z_a * 3 + 0.1 * torch.rand(z_a.shape, generator=g)
    z_b[:, perm[0]] = 0.0  # a dead feature correlates with nothing
    m = match_evaluation.data_match(z_a, z_b, solver=solver, k=5)
    assert m.weights == "data"
    assert np.mean(m.permutation[1:] == perm.numpy()[1:]) == 1.0
    corr = match_evaluation.activation_correlation(z_a, z_b)
    assert corr.shape == (50, 50) and float(corr[:, perm[0]].abs().max()) == 0.0
    with pytest.raises(ValueError, match="same N tokens"):
        match_evaluation.data_match(z_a, z_b[:10])


def test_bootstrap_interval_contains_the_mean_and_narrows_with_more_windows():
    g = torch.Generator().manual_seed(0)
    few, many = torch.randn(8, generator=g) + 1, torch.randn(200, generator=g) + 1
    lo, hi = lm_loss.bootstrap_mean_ci(few)
    assert lo <= float(few.mean()) <= hi
    lo2, hi2 = lm_loss.bootstrap_mean_ci(many)
    assert hi2 - lo2 < hi - lo
    with pytest.raises(ValueError, match="level must be a number in"):
        lm_loss.bootstrap_mean_ci(few, level=1.5)


def test_delta_losses_report_intervals_and_token_counts():
    model, tokenizer = lms.load_model("tiny-random")
    ids = lms.token_windows(tokenizer, [("doc", "def f(x):\n    return x + 1\n" * 30)], 24)[:5]
    saes = [match_ground_truth.random_jumprelu(64, 32, seed=t, dtype="float32", apply_b_dec_to_input=False)
            for t in range(4)]
    acts = lms.collect_residuals(model, ids)
    stack = match_evaluation.match_stack(saes, [0, 1, 2, 3], train_acts=acts)
    assert stack.methods == ["folded", "unfolded", "unfolded_decoder", "folded_decoder", "folded_encoder",
                             "data_based"]
    loss = lm_loss.delta_losses(model, ids, stack, ["folded", "data_based", "own", "layer_drop"], decoding="original",
                            pairs=[1], head_dtype=torch.bfloat16)
    assert list(loss.delta) == ["1-2"] and loss.n_tokens == 5 * 22 and loss.n_windows == 5
    for v, d in loss.delta["1-2"].items():
        lo, hi = loss.ci["1-2"][v]
        assert lo <= d <= hi
    with pytest.raises(ValueError, match="decoding must be one of 'folded', 'original', got 'raw'"):
        match_evaluation.transfer_map(stack, 0, "folded", "raw")


def test_delta_losses_resume_from_cached_states_like_a_full_hooked_pass():
    """ΔL reuses the clean pass's residual streams and runs only the blocks after the edited one:
    the losses equal those of a full forward pass with the edit hooked in, block by block."""
    model, tokenizer = lms.load_model("tiny-random")
    ids = lms.token_windows(tokenizer, [("doc", "The cat sat on the mat. " * 40)], 20)[:6]
    saes = [match_ground_truth.random_jumprelu(64, 32, seed=t, dtype="float32", apply_b_dec_to_input=False)
            for t in range(4)]
    stack = match_evaluation.match_stack(saes, [0, 1, 2, 3], train_acts=lms.collect_residuals(model, ids))
    variants = ["folded", "own", "layer_drop"]
    loss = lm_loss.delta_losses(model, ids, stack, variants, batch_size=4)
    clean = lm_loss.next_token_losses(model, ids, batch_size=4)
    assert loss.clean == pytest.approx(float(clean.mean()), rel=1e-6)
    for i, name in enumerate(stack.pairs):
        edits = match_evaluation.approximations(stack, i)
        for v in variants:
            full = lm_loss.next_token_losses(model, ids, layer=i + 1, edit=edits[v], batch_size=4)
            assert loss.delta[name][v] == pytest.approx(float((full - clean).double().mean()), rel=1e-4, abs=1e-6)
    assert all(type(b).__name__ != "_Replay" for b in lms.blocks(model))  # the real blocks are back


def test_gated_model_error_names_the_fix(monkeypatch):
    from transformers import AutoModelForCausalLM

    def refuse(*args, **kwargs):
        cause = GatedRepoError.__new__(GatedRepoError)  # as huggingface_hub raises it, without an HTTP response
        Exception.__init__(cause, "Cannot access gated repo for url https://huggingface.co/google/gemma-2-2b")
        raise OSError("You are trying to access a gated repo.") from cause

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)
    with pytest.raises(lms.HubAccessError) as info:
        lms.load_model("google/gemma-2-2b")
    text = str(info.value)
    for needed in ("google/gemma-2-2b", "accept the model's licence", "https://huggingface.co/google/gemma-2-2b",
                   "settings/tokens", "huggingface-cli login", "HF_TOKEN"):
        assert needed in text


def test_other_hub_errors_pass_through(monkeypatch):
    from transformers import AutoModelForCausalLM

    def broken(*args, **kwargs):
        raise ValueError("something else")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", broken)
    with pytest.raises(ValueError, match="something else"):
        lms.load_model("google/gemma-2-2b")


_INT8 = pytest.mark.skipif(not assignment.int8_available(), reason="oneDNN's int8 linear is not available on this CPU")


@pytest.mark.parametrize("head, rtol, atol", [(torch.float32, 1e-5, 1e-4),
                                              pytest.param(torch.int8, 1e-4, 1e-3, marks=_INT8)])
def test_head_log_sum_exp_without_shift_equals_cross_entropy_and_falls_back_on_overflow(head, rtol, atol):
    """The head sums exp(logits) without subtracting the maximum; rows whose sum overflows
    (logits beyond 88) are recomputed with it subtracted: both equal the cross-entropy (the int8
    head's rows too, within its float32-checked precision)."""
    model, _ = lms.load_model("tiny-random")
    weight = model.get_output_embeddings().weight
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(12, weight.shape[1], generator=g)
    hidden[:3] *= 2000 / float((hidden[:3] @ weight.T).abs().max())  # logits up to ±2000: exp overflows
    targets = torch.randint(0, weight.shape[0], (12,), generator=g)
    expected = torch.nn.functional.cross_entropy(hidden @ weight.T, targets, reduction="none")
    got = lm_loss._token_losses(model, hidden, targets, vocab_block=64, head_dtype=head)
    assert torch.isfinite(got).all()
    assert torch.allclose(got, expected, rtol=rtol, atol=atol)


def test_delta_losses_measure_each_variant_on_its_own_pairs_and_check_the_head():
    model, tokenizer = lms.load_model("tiny-random")
    ids = lms.token_windows(tokenizer, [("doc", "The cat sat on the mat. " * 40)], 20)[:6]
    saes = [match_ground_truth.random_jumprelu(64, 32, seed=t, dtype="float32", apply_b_dec_to_input=False)
            for t in range(4)]
    stack = match_evaluation.match_stack(saes, [0, 1, 2, 3], train_acts=lms.collect_residuals(model, ids))
    variants = ["folded", "own", "layer_drop"]
    full = lm_loss.delta_losses(model, ids, stack, variants, batch_size=4)
    part = lm_loss.delta_losses(model, ids, stack, variants, pairs_by_variant={"own": [1], "layer_drop": []},
                            batch_size=4, head_dtype=torch.bfloat16, check_head=True)
    assert part.pairs == {"folded": ["0-1", "1-2", "2-3"], "own": ["1-2"], "layer_drop": []}
    assert {p: sorted(v) for p, v in part.delta.items()} == {"0-1": ["folded"], "1-2": ["folded", "own"],
                                                             "2-3": ["folded"]}
    check = part.head_check
    assert (check["pair"], check["variant"], check["windows"]) == ("2-3", "folded", 4)
    assert check["bfloat16"] == pytest.approx(check["float32"], abs=0.05)
    exact = lm_loss.delta_losses(model, ids[:4], stack, ["folded"], pairs=[2]).delta["2-3"]["folded"]
    assert check["float32"] == pytest.approx(exact, rel=1e-4, abs=1e-6)
    f32 = lm_loss.delta_losses(model, ids, stack, variants, pairs_by_variant={"own": [1]}, batch_size=4)
    assert f32.delta["1-2"]["own"] == pytest.approx(full.delta["1-2"]["own"], rel=1e-5, abs=1e-7)
    with pytest.raises(ValueError, match="each key of pairs_by_variant must be one of the variants"):
        lm_loss.delta_losses(model, ids, stack, ["folded"], pairs_by_variant={"own": [0]})


def test_sketch_candidates_hold_the_optimum_and_give_the_exact_answer():
    """Candidates found on the part of the vectors that holds most of the norm, rescored by
    full-vector cosine: on a planted problem the optimum is among them and the answer is exact."""
    g = torch.Generator().manual_seed(2)
    a = torch.cat([10 * torch.randn(300, 24, generator=g), torch.randn(300, 9, generator=g)], dim=1)
    perm_true = torch.randperm(300, generator=g)
    b = torch.empty_like(a)
    b[perm_true] = a + 0.3 * torch.randn(a.shape, generator=g)
    exact = assignment.exact_assignment(a, b)
    rows, cols, products = assignment.knn_candidates(a, b, 4, dtype=torch.float32, sketch=slice(0, 24))
    assert np.isin(np.arange(300) * 300 + exact, rows * 300 + cols).all()
    np.testing.assert_allclose(products, (a[rows] * b[cols]).sum(1).numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(assignment.sparse_assignment(a, b, k=4, sketch=slice(0, 24)), exact)
    np.testing.assert_array_equal(exact, perm_true.numpy())  # the planted permutation is the optimum
    with pytest.raises(ValueError, match="sketch must be a non-empty slice of the 33 coordinates, got slice"):
        assignment.knn_candidates(a, b, 4, sketch=slice(40, 50))


def test_candidate_sketch_picks_the_part_that_holds_the_norm():
    sae = match_ground_truth.random_jumprelu(16, 64, seed=3)
    va = sm.feature_vectors(sae, folded=True)
    dec_heavy = va.clone()
    dec_heavy[:, :16] *= 100
    assert sm.candidate_sketch(dec_heavy, dec_heavy, 16) == slice(0, 16)
    enc_heavy = va.clone()
    enc_heavy[:, 16:] *= 100
    assert sm.candidate_sketch(enc_heavy, enc_heavy, 16) == slice(16, None)
    even = torch.cat([torch.ones(4, 16), torch.ones(4, 17) * (16 / 17) ** 0.5], dim=1)
    assert sm.candidate_sketch(even, even, 16) is None
    copy, truth = match_ground_truth.perturbed_copy(sae, noise=0.05, scale_spread=10.0, seed=1)
    for candidates in ("auto", "sketch", "full"):
        m = sm.match(sae, copy, solver="sparse", k=8, candidates=candidates)
        assert match_ground_truth.recovery(m, truth) == 1.0
    with pytest.raises(ValueError, match="candidates must be one of 'auto', 'sketch', 'full', got 'some'"):
        sm.match(sae, copy, solver="sparse", candidates="some")


def _random_graph(n: int, extra: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bipartite graph with a hidden full matching plus ``extra`` random edges per row, random products."""
    rng = np.random.default_rng(seed)
    hidden = rng.permutation(n)
    key = np.unique(np.concatenate([np.arange(n) * n + hidden, rng.integers(0, n * n, n * extra)]))
    return key // n, key % n, rng.normal(size=len(key))


@pytest.mark.parametrize("n, extra", [(50, 49), (2000, 6)])
def test_ortools_and_scipy_solve_the_sparse_problem_to_the_same_optimum(n, extra):
    rows, cols, products = _random_graph(n, extra, seed=n)
    by_ortools = assignment.solve_sparse(rows, cols, products, n, method="ortools")
    by_scipy = assignment.solve_sparse(rows, cols, products, n, method="scipy")
    assert sorted(by_ortools.tolist()) == list(range(n))
    np.testing.assert_array_equal(by_ortools, by_scipy)  # continuous products: the optimum is unique
    assert np.isin(np.arange(n) * n + by_ortools, rows * n + cols).all()  # only the graph's edges
    if extra == n - 1:  # (nearly) complete: compare with the dense exact solver
        dense = np.full((n, n), -1e9)
        dense[rows, cols] = products
        r, c = linear_sum_assignment(dense, maximize=True)
        np.testing.assert_array_equal(by_ortools[r], c)
    with pytest.raises(ValueError, match="method must be one of 'ortools', 'scipy', got 'lapjv'"):
        assignment.solve_sparse(rows, cols, products, n, method="lapjv")


def test_ortools_keeps_the_optimum_when_products_differ_by_little():
    """Integer costs (2^bits levels over the products' range) must still separate two full
    matchings whose totals differ by a millionth of that range."""
    rows, cols = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])
    for sign, want in ((1, [1, 0]), (-1, [0, 1])):  # the swap wins by 1e-6, then the identity
        products = np.array([1.0, 0.5, 0.5 + sign * 1e-6, 0.0])
        np.testing.assert_array_equal(assignment.solve_sparse(rows, cols, products, 2), want)
        np.testing.assert_array_equal(assignment.solve_sparse(rows, cols, products, 2, method="scipy"), want)


@_INT8
def test_int8_products_are_cosines_within_their_rounding():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(300, 1024, generator=g), torch.randn(500, 1024, generator=g) * 7
    b[3] = 0
    cos = torch.nn.functional.normalize(a, dim=1) @ torch.nn.functional.normalize(b, dim=1).T
    int8 = assignment.Int8Products(b, block_size=128)(a)
    assert int8.shape == (300, 500) and int8.dtype == torch.float32
    assert float((int8 - cos).abs().max()) < 5e-3
    assert float((int8 - cos).abs().mean()) < 1e-3
    assert torch.equal(int8[:, 3], torch.zeros(300))  # a zero row has cosine 0


@_INT8
def test_int8_candidates_give_float32_products_and_the_exact_answer():
    g = torch.Generator().manual_seed(4)
    a = torch.randn(600, 256, generator=g)
    perm_true = torch.randperm(600, generator=g)
    b = torch.empty_like(a)
    b[perm_true] = a * (0.5 + 4.5 * torch.rand(600, 1, generator=g)) + 0.3 * torch.randn(a.shape, generator=g)
    rows, cols, products = assignment.knn_candidates(a, b, 4, dtype=torch.int8)
    np.testing.assert_allclose(products, (a[rows].double() * b[cols].double()).sum(1).numpy(), rtol=1e-4, atol=1e-3)
    exact = assignment.exact_assignment(a, b)
    np.testing.assert_array_equal(exact, perm_true.numpy())
    np.testing.assert_array_equal(assignment.sparse_assignment(a, b, k=4, dtype=torch.int8), exact)
    np.testing.assert_array_equal(assignment.sparse_assignment(a, b, k=4, dtype=torch.int8, sketch=slice(0, 200)),
                                  exact)


def test_candidate_dtype_follows_the_hardware_and_the_size(monkeypatch):
    assert assignment.candidate_dtype("float32") is torch.float32
    assert assignment.candidate_dtype("int8") is torch.int8
    monkeypatch.setattr(assignment, "native_bfloat16", lambda device="cpu": True)
    assert assignment.candidate_dtype("auto", "cpu", work=1) is torch.bfloat16
    monkeypatch.setattr(assignment, "native_bfloat16", lambda device="cpu": False)
    assert assignment.candidate_dtype("auto", "cpu", work=assignment.INT8_MIN_WORK - 1) is torch.float32
    big = assignment.candidate_dtype("auto", "cpu", work=assignment.INT8_MIN_WORK)
    assert big is (torch.int8 if assignment.int8_available() else torch.float32)
    with pytest.raises(ValueError, match="dtype must be one of 'auto', 'float32', 'bfloat16', 'int8', got 'fp8'"):
        assignment.candidate_dtype("fp8")


def test_edge_products_in_any_order_equal_the_rows_dot_products():
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(40, 9, generator=g, dtype=torch.float64), torch.randn(40, 9, generator=g, dtype=torch.float64)
    rows, cols = np.array([39, 3, 3, 0, 17]), np.array([0, 7, 2, 39, 17])  # unsorted
    np.testing.assert_allclose(assignment._edge_inner_products(a, b, rows, cols),
                               (a[rows] * b[cols]).sum(1).numpy(), rtol=1e-5, atol=1e-5)
    assert assignment._edge_inner_products(a, b, rows[:0], cols[:0]).shape == (0,)


def test_int8_candidates_where_the_kernel_is_missing_are_refused_by_name(monkeypatch):
    monkeypatch.setattr(assignment, "int8_available", lambda: False)
    a = torch.randn(20, 8)
    with pytest.raises(ValueError, match=r"dtype=torch.int8 needs oneDNN's int8 kernel on the CPU"):
        assignment.knn_candidates(a, a, 2, dtype=torch.int8)
    assert assignment.candidate_dtype("auto", "cpu", work=None) in (torch.float32, torch.bfloat16)


class _HeadOnly(torch.nn.Module):
    """Just a vocabulary head and a config: what the loss code reads of a causal LM."""

    def __init__(self, weight: torch.Tensor, cap: float | None = None) -> None:
        super().__init__()
        self.lm_head = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        self.lm_head.weight.data = weight
        self.config = type("Config", (), {"final_logit_softcapping": cap})()

    def get_output_embeddings(self):
        return self.lm_head


def _wide_head(cap=None, V=20000, d=64, n=48, spread=30.0):
    """A head whose logits spread over ``spread`` nats, so most of them lie below the margin."""
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(V, d, generator=g)
    hidden = torch.randn(n, d, generator=g)
    hidden *= spread / float((hidden @ weight.T).std(1).mean() * 6)
    return _HeadOnly(weight, cap), hidden, torch.randint(0, V, (n,), generator=g)


@_INT8
@pytest.mark.parametrize("cap", [None, 30.0])
def test_int8_head_is_float32_where_the_logits_matter(cap):
    model, hidden, targets = _wide_head(cap)
    logits = hidden @ model.lm_head.weight.T
    if cap:
        logits = torch.tanh(logits / cap) * cap
    expected = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    got = lm_loss._token_losses(model, hidden, targets, vocab_block=4096, head_dtype=torch.int8)
    hybrid = (got - expected).abs()
    int8_alone = (lm_loss._int8_log_sum_exp(model, hidden, 4096, cap, margin=-1e9) - torch.logsumexp(logits, 1)).abs()
    assert float(hybrid.max()) < 2e-3
    assert float(hybrid.mean()) < float(int8_alone.mean()) / 10  # the float32 recomputation is what makes it exact


@_INT8
def test_delta_losses_with_the_int8_head_check_it_against_float32():
    model, tokenizer = lms.load_model("tiny-random")
    ids = lms.token_windows(tokenizer, [("doc", "The cat sat on the mat. " * 40)], 20)[:4]
    saes = [match_ground_truth.random_jumprelu(64, 32, seed=t, dtype="float32", apply_b_dec_to_input=False)
            for t in range(4)]
    stack = match_evaluation.match_stack(saes, [0, 1, 2, 3], train_acts=lms.collect_residuals(model, ids))
    table = lm_loss.delta_losses(model, ids, stack, ["folded"], pairs=[2], batch_size=4, head_dtype=torch.int8,
                             check_head=True)
    assert table.head_dtype == "int8"
    assert table.head_check["int8"] == pytest.approx(table.head_check["float32"], abs=1e-4)


def test_head_dtype_follows_the_hardware_and_refuses_bad_choices(monkeypatch):
    from esae import runtime

    with pytest.raises(ValueError, match=r"loss_head_dtype must be one of auto, float32, bfloat16, int8, got 'half'"):
        lm_loss.head_dtype("half")
    with pytest.raises(ValueError, match="loss_head_dtype 'int8' needs a CPU"):
        lm_loss.head_dtype("int8", "meta")
    assert lm_loss.head_dtype("float32", "meta") == torch.float32
    monkeypatch.setattr(runtime, "native_bfloat16", lambda device="cpu": True)
    assert lm_loss.head_dtype("auto") == torch.bfloat16
    monkeypatch.setattr(runtime, "native_bfloat16", lambda device="cpu": False)
    monkeypatch.setattr(assignment, "int8_available", lambda: True)
    assert lm_loss.head_dtype("auto") == torch.int8
    assert lm_loss.head_dtype("auto", "meta") == torch.float32  # int8 is a CPU kernel
    monkeypatch.setattr(assignment, "int8_available", lambda: False)
    assert lm_loss.head_dtype("auto") == torch.float32
    with pytest.raises(ValueError, match="this CPU lacks it"):
        lm_loss.head_dtype("int8")
