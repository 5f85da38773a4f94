"""The candidate definitions of R² (chapter 4's table, behind RESULT 1's "which definition
reproduces the paper's baselines") against independent references: scikit-learn's r2_score and
NumPy's correlation, and their invariances."""

import numpy as np
import pytest
import torch
from sklearn.metrics import r2_score

from esae import metrics


@pytest.fixture
def pair():
    """Targets with dimensions of very different variance and a noisy, biased prediction (float64)."""
    g = torch.Generator().manual_seed(0)
    y = torch.randn(200, 12, generator=g, dtype=torch.float64) * torch.logspace(-1, 1, 12, dtype=torch.float64) + 3.0
    pred = 0.8 * y + 0.3 * torch.randn(200, 12, generator=g, dtype=torch.float64) + 0.1
    return y, pred


def test_pooled_and_variance_weighted_equal_scikit_learns_variance_weighted(pair):
    y, pred = pair
    ref = r2_score(y.numpy(), pred.numpy(), multioutput="variance_weighted")
    assert metrics.r2_pooled(y, pred) == pytest.approx(ref, rel=1e-12)
    assert metrics.r2_variance_weighted(y, pred) == pytest.approx(ref, rel=1e-12)


def test_per_dimension_mean_equals_r2_score_and_skips_constant_dimensions(pair):
    y, pred = pair
    assert metrics.r2_per_dim(y, pred) == pytest.approx(r2_score(y.numpy(), pred.numpy()), rel=1e-12)
    # a dead (constant) dimension, common after a ReLU, has no variance to explain: it is left out
    y_dead = torch.cat([y, torch.zeros(len(y), 1, dtype=y.dtype)], 1)
    pred_dead = torch.cat([pred, torch.full((len(y), 1), 0.5, dtype=y.dtype)], 1)
    assert metrics.r2_per_dim(y_dead, pred_dead) == pytest.approx(metrics.r2_per_dim(y, pred), rel=1e-12)


def test_per_sample_is_the_mean_of_each_rows_r2(pair):
    y, pred = pair
    rows = [r2_score(y[i].numpy(), pred[i].numpy()) for i in range(len(y))]
    assert metrics.r2_per_sample(y, pred) == pytest.approx(float(np.mean(rows)), rel=1e-12)
    # a sample whose activations are all equal (e.g. all zero after a ReLU) has no R² and is left out
    y_flat = torch.cat([y, torch.zeros(1, y.shape[1], dtype=y.dtype)])
    pred_flat = torch.cat([pred, torch.ones(1, y.shape[1], dtype=y.dtype)])
    assert metrics.r2_per_sample(y_flat, pred_flat) == pytest.approx(float(np.mean(rows)), rel=1e-12)


def test_uncentred_measures_variance_around_zero(pair):
    y, pred = pair
    expected = 1 - ((y - pred) ** 2).sum() / (y**2).sum()
    assert metrics.r2_uncentred(y, pred) == pytest.approx(float(expected), rel=1e-12)
    # the mean as prediction explains nothing around the mean, but around zero it explains the
    # squared means' share of Σy² (the targets are offset by 3)
    mean = y.mean(0, keepdim=True).expand_as(y)
    assert metrics.r2_pooled(y, mean) == pytest.approx(0.0, abs=1e-12)
    share = len(y) * (y.mean(0) ** 2).sum() / (y**2).sum()
    assert metrics.r2_uncentred(y, mean) == pytest.approx(float(share), rel=1e-10)
    assert share > 0.3


def test_squared_correlation_matches_numpy_and_ignores_scale_and_offset(pair):
    y, pred = pair
    ref = np.corrcoef(y.flatten().numpy(), pred.flatten().numpy())[0, 1] ** 2
    assert metrics.r2_squared_correlation(y, pred) == pytest.approx(ref, rel=1e-10)
    assert metrics.r2_squared_correlation(y, 5 * pred - 2) == pytest.approx(ref, rel=1e-10)


@pytest.mark.parametrize("name", sorted(metrics.R2_DEFINITIONS))
def test_every_definition_gives_one_for_a_perfect_prediction(pair, name):
    y, _ = pair
    assert metrics.R2_DEFINITIONS[name](y, y.clone()) == pytest.approx(1.0, abs=1e-12)


def test_definitions_disagree_where_the_choice_matters(pair):
    """The point of chapter 4's table: the same prediction scores differently under each reading."""
    y, pred = pair
    values = {name: fn(y, pred) for name, fn in metrics.R2_DEFINITIONS.items()}
    assert values["pooled centred"] != pytest.approx(values["per-dimension mean (r2_score)"], abs=1e-3)
    assert values["pooled centred"] != pytest.approx(values["uncentred 1 − SSE/Σy²"], abs=1e-3)


@pytest.mark.parametrize("name", sorted(metrics.R2_DEFINITIONS))
def test_shape_mismatch_is_refused_with_both_shapes(name):
    with pytest.raises(ValueError, match=r"target and pred must both be \(n, d\) with equal shapes, got \(4, 3\) and \(4, 2\)"):
        metrics.R2_DEFINITIONS[name](torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"got \(4,\) and \(4,\)"):
        metrics.R2_DEFINITIONS[name](torch.zeros(4), torch.zeros(4))
