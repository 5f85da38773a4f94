import pytest
import torch

from esae import equivariance as eq
from esae.groups import power_error


def c4_representation(d: int, seed: int = 0) -> torch.Tensor:
    """A known exact representation of C4 on R^d: rotation blocks and ±1, in a random orthogonal basis."""
    gen = torch.Generator().manual_seed(seed)
    blocks = [torch.tensor([[0.0, -1.0], [1.0, 0.0]])] * (d // 4) + [torch.tensor([[1.0]])] * (d // 4)
    blocks += [torch.tensor([[-1.0]])] * (d - 2 * (d // 4) - d // 4)
    r = torch.block_diag(*blocks)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen))
    return q @ r @ q.T


def orbit_data(m: torch.Tensor, n: int, noise: float = 0.0, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, m.shape[0], generator=gen)
    rotated = torch.stack([eq.transform(x, m, p) for p in (1, 2, 3)])
    return x, rotated + noise * torch.randn(rotated.shape, generator=gen)


def test_truth_has_c4_order():
    m = c4_representation(16)
    assert power_error(m, 4) < 1e-5
    assert power_error(m, 2) > 0.5


@pytest.mark.parametrize("init", ["identity", "lstsq"])
def test_fit_recovers_known_representation(init):
    truth = c4_representation(16)
    x, rot = orbit_data(truth, 512, noise=0.01)
    cfg = eq.FitConfig(epochs=60, batch_size=64, lr=1e-2, init=init)
    fit = eq.fit_m(x, rot, cfg)
    assert fit.m.shape == (16, 16)
    xt, rott = orbit_data(truth, 256, seed=2)
    scores = eq.r2(xt, rott, fit.m)
    assert scores["pooled_mean"] > 0.999 and scores["per_dim_mean"] > 0.999
    assert set(scores["pooled"]) == {1, 2, 3, 4}
    assert (fit.m - truth).norm() / truth.norm() < 0.02
    assert len(fit.history) == 60 and fit.history[-1]["loss"] < fit.history[0]["loss"]


def test_identity_is_perfect_on_invariant_activations():
    x = torch.randn(100, 8)
    rot = torch.stack([x, x, x])
    scores = eq.r2(x, rot, torch.eye(8))
    assert scores["pooled_mean"] == pytest.approx(1.0) and scores["per_dim_mean"] == pytest.approx(1.0)


def test_lstsq_warm_start_is_already_good():
    truth = c4_representation(12)
    x, rot = orbit_data(truth, 300)
    assert (eq.lstsq_m(x, rot[0]) - truth).abs().max() < 1e-3  # ridge bias O(1e-4)


def test_lstsq_keeps_unvisited_directions_at_identity():
    truth = c4_representation(8)
    x, rot = orbit_data(truth, 300)
    pad = lambda t: torch.cat([t, torch.zeros(*t.shape[:-1], 4)], -1)  # 4 dimensions the data never visits
    m = eq.lstsq_m(pad(x), pad(rot[0]))
    torch.testing.assert_close(m[8:, 8:], torch.eye(4), atol=1e-6, rtol=0)
    assert (m[:8, :8] - truth).abs().max() < 1e-3
    assert power_error(m, 4) < 1e-2  # M^4 = I holds on the whole space, not only where the data is
    basis = torch.eye(12)[:8]
    assert power_error(m, 4, basis) < 1e-2 and power_error(torch.zeros(12, 12), 4, basis) == pytest.approx(1.0)


@pytest.mark.parametrize("constraint", ["penalty", "exact"])
def test_constrained_fits_satisfy_m4_identity(constraint):
    truth = c4_representation(12)
    x, rot = orbit_data(truth, 400, noise=0.05)
    cfg = eq.FitConfig(epochs=40, lr=1e-2, init="lstsq", constraint=constraint, penalty=10.0)
    fit = eq.fit_m(x, rot, cfg, eval_data=orbit_data(truth, 100, seed=3))
    assert "r2" in fit.history[-1] and fit.history[-1]["r2"] > 0.99
    assert power_error(fit.m, 4) < (1e-4 if constraint == "exact" else 0.02)


def test_roots_of_unity_block():
    eig = torch.tensor([0.9 + 0.1j, 0.05 + 1.1j, 0.05 - 1.1j, -0.8 + 0j], dtype=torch.complex128)
    r, snapped = eq.roots_of_unity_block(eig, 4)
    assert torch.allclose(torch.linalg.matrix_power(r, 4), torch.eye(4))
    assert torch.allclose(snapped, torch.tensor([1, 1j, -1j, -1], dtype=torch.complex128))


def test_shape_errors_and_bad_order():
    x = torch.randn(10, 4)
    with pytest.raises(ValueError, match=r"acts_rotated must be \(P, n, d\)"):
        eq.fit_m(x, torch.randn(3, 10, 5))
    with pytest.raises(ValueError, match="acts must be a tensor"):
        eq.fit_m(torch.randn(10), torch.randn(3, 10, 4))
    with pytest.raises(ValueError, match="P = order or order - 1"):
        eq.r2(x, torch.randn(2, 10, 4), torch.eye(4))
    for bad in (0, -4):
        with pytest.raises(ValueError, match="order must be an int >= 1"):
            eq.FitConfig(order=bad)
        with pytest.raises(ValueError, match="order must be an int >= 1"):
            eq.r2(x, torch.randn(3, 10, 4), torch.eye(4), order=bad)
    with pytest.raises(ValueError, match="init must be one of"):
        eq.FitConfig(init="zeros")
    with pytest.raises(ValueError, match="lr must be a number"):
        eq.FitConfig(lr=0)


def test_r2_averages_the_non_trivial_powers_and_is_minus_one_for_independent_draws():
    gen = torch.Generator().manual_seed(0)
    n, d = 20000, 6
    x = torch.randn(n, d, generator=gen) * torch.arange(1, d + 1) + 3.0
    rot = torch.randn(3, n, d, generator=gen) * torch.arange(1, d + 1) + 3.0  # same distribution, independent
    scores = eq.r2(x, rot, torch.eye(d))
    assert scores["powers"] == [1, 2, 3] and scores["pooled"][4] == pytest.approx(1.0)  # g^4 = e kept per power
    assert scores["pooled_mean"] == pytest.approx(-1.0, abs=0.05)
    assert scores["per_dim_mean"] == pytest.approx(-1.0, abs=0.05)
    defs = eq.r2_definitions(x, rot, torch.eye(d))
    assert defs["pooled centred"] == pytest.approx(-1.0, abs=0.05)
    assert defs["variance-weighted"] == pytest.approx(defs["pooled centred"], abs=1e-9)
    assert defs["squared correlation"] == pytest.approx(0.0, abs=0.01)
    # uncentred R^2 counts the mean as explained: well above -1 for these offset activations
    assert defs["uncentred 1 − SSE/Σy²"] > defs["pooled centred"] + 0.5


def test_the_papers_recipe_runs_its_own_epochs():
    from esae import pipeline

    fits = pipeline.fit_configs(dict(epochs=15, paper_epochs=150, constrained_epochs=100, batch_size=256, lr=1e-3,
                                     penalty=1.0, seed=0))
    assert (fits["paper"].epochs, fits["paper"].init) == (150, "identity")
    assert (fits["warm_start"].epochs, fits["warm_start"].init) == (15, "lstsq")
    assert fits["penalty"].epochs == fits["exact"].epochs == 100
    default = eq.variant_config("paper", epochs=7, constrained_epochs=1, batch_size=64, lr=1e-3)
    assert default.epochs == 7  # without paper_epochs the paper's recipe runs `epochs`
