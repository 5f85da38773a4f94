"""Sparse probing (chapter 6): truncation, F1, the three probes, degenerate tasks, caching."""

import numpy as np
import pytest
import torch

from esae import probing, sae_probing
from esae.probing import PROBES, ProbeConfig

FAST = ProbeConfig(xgb_estimators=20)  # the protocol's settings except a shorter boosting run


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ESAE_CACHE", str(tmp_path / "cache"))


def test_truncation_picks_the_largest_class_mean_gap():
    rng = np.random.default_rng(0)
    n, F = 400, 12
    y = rng.random(n) < 0.3
    x = rng.normal(0, 0.05, size=(n, F))
    # class-mean gaps 3.0 (latent 7), 2.0 (latent 2), 1.0 (latent 9, negative direction), 0.5 (latent 4)
    for latent, gap in ((7, 3.0), (2, 2.0), (9, -1.0), (4, 0.5)):
        x[:, latent] += gap * y
    x[:, 0] += 100.0  # a large but constant offset: no gap, must not be chosen
    idx = probing.top_latents(x, y[:, None], 3)
    assert idx.shape == (1, 3)
    assert idx[0].tolist() == [7, 2, 9]
    gap = probing.class_mean_gap(x, y[:, None])[0]
    np.testing.assert_allclose(gap[[7, 2, 9, 4]], [3.0, 2.0, 1.0, 0.5], atol=0.05)


def test_truncation_uses_the_given_split_and_breaks_ties_by_index():
    x = np.zeros((6, 5))
    y = np.array([[1, 0], [1, 0], [1, 1], [0, 1], [0, 1], [0, 0]], dtype=bool)
    idx = probing.top_latents(x, y, 2)  # every gap is zero: lowest indices, deterministically
    assert idx.tolist() == [[0, 1], [0, 1]]
    with pytest.raises(ValueError, match=r"L must be an int in \[1, 5\], got 6"):
        probing.top_latents(x, y, 6)
    with pytest.raises(ValueError, match="labels must have 6 rows"):
        probing.top_latents(x, y[:4], 2)


def test_f1_of_perfect_and_constant_predictors():
    y = np.array([1, 0, 0, 1, 0, 0, 0, 0], dtype=bool)  # prevalence 1/4
    assert probing.f1(y, y) == 1.0
    assert probing.f1(y, np.zeros_like(y)) == 0.0
    # always "positive": precision 1/4, recall 1, F1 = 2p / (1 + p)
    assert probing.f1(y, np.ones_like(y)) == pytest.approx(2 * 0.25 / 1.25)
    assert probing.f1(np.zeros(4, bool), np.zeros(4, bool)) == 0.0


def test_f1_is_scikit_learns_bit_for_bit():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    for n in (1, 7, 1000, 1003):
        for p_true, p_pred in ((0.5, 0.5), (0.03, 0.2), (0.0, 0.1), (0.9, 0.0)):
            y = rng.random(n) < p_true
            pred = (rng.random(n) < p_pred).astype(np.int64)  # the probes predict 0/1 integers
            assert probing.f1(y, pred) == float(f1_score(y, pred.astype(bool), zero_division=0))
    with pytest.raises(ValueError, match="same length"):
        probing.f1(np.ones(3, bool), np.ones(4, bool))


def _single_latent_task(n, F, seed):
    rng = np.random.default_rng(seed)
    z = np.maximum(rng.normal(0, 0.3, size=(n, F)), 0)   # sparse-ish noise latents
    y = rng.random(n) < 0.3
    z[:, 5] = np.where(y, 2.0, 0.0)                       # the label is latent 5 being on
    return z.astype(np.float32), y


@pytest.mark.parametrize("probe", PROBES)
def test_a_task_whose_label_is_one_latent_is_solved_by_every_probe(probe):
    ztr, ytr = _single_latent_task(300, 40, 1)
    zte, yte = _single_latent_task(200, 40, 2)
    scores = probing.probe_scores(ztr, ytr[:, None], zte, yte[:, None], L=4, probes=[probe], config=FAST)
    assert scores.indices[0, 0] == 5
    assert scores.f1[probe][0] == 1.0
    # the truncated reconstruction through a random affine decoder carries the same information
    rng = np.random.default_rng(3)
    decoder = (rng.normal(size=(40, 16)).astype(np.float32), rng.normal(size=16).astype(np.float32))
    rec = probing.probe_scores(ztr, ytr[:, None], zte, yte[:, None], L=4, probes=[probe], config=FAST,
                               decoder=decoder)
    assert rec.f1[probe][0] == 1.0


def test_degenerate_tasks_are_reported_not_crashed_on():
    ztr, ytr = _single_latent_task(200, 20, 4)
    zte, yte = _single_latent_task(100, 20, 5)
    labels_tr = np.stack([ytr, np.zeros_like(ytr), ytr, np.ones_like(ytr)], 1)
    labels_te = np.stack([yte, yte, np.zeros_like(yte), yte], 1)
    scores = probing.probe_scores(ztr, labels_tr, zte, labels_te, L=3, config=FAST)
    assert scores.degenerate == {1: "no positive examples in the train split",
                                 2: "no positive examples in the test split",
                                 3: "no negative examples in the train split"}
    for p in PROBES:
        assert scores.f1[p][0] == 1.0 and np.isnan(scores.f1[p][1:]).all()
    assert scores.best_probe()[1:] == [None, None, None]
    means = probing.group_means(scores.best(), ["S", "SO", "SO", "SPO"])
    assert means == {"S": 1.0, "SO": None, "SP": None, "SPO": None, "all": 1.0}


def test_group_means_and_summary():
    scores = np.array([1.0, 0.5, 0.0, np.nan, 0.25])
    groups = ["S", "S", "SP", "SP", "SPO"]
    assert probing.group_means(scores, groups) == {"S": 0.75, "SO": None, "SP": 0.0, "SPO": 0.25,
                                                   "all": pytest.approx(1.75 / 4)}
    with pytest.raises(ValueError, match="each task group must be one of 'S', 'SO', 'SP', 'SPO', got 'X'"):
        probing.group_means(scores, ["S", "S", "SP", "SP", "X"])
    s = probing.ProbeScores(f1={"knn": np.array([0.2, 0.9]), "xgboost": np.array([0.6, 0.1])},
                            degenerate={}, indices=np.zeros((2, 1), int))
    np.testing.assert_allclose(s.best(), [0.6, 0.9])
    assert s.best_probe() == ["xgboost", "knn"]
    summary = probing.summarize(s, ["S", "SO"])
    assert summary["best"]["all"] == pytest.approx(0.75) and summary["knn"]["S"] == pytest.approx(0.2)


def test_scores_are_cached_per_probe_and_parallel_runs_agree(monkeypatch, tmp_path):
    from esae import cache

    monkeypatch.setenv("ESAE_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(6)
    ztr, zte = rng.normal(size=(150, 10)), rng.normal(size=(80, 10))
    ytr = np.stack([ztr[:, i] > 0.3 for i in range(4)], 1)
    yte = np.stack([zte[:, i] > 0.3 for i in range(4)], 1)
    first = probing.probe_scores(ztr, ytr, zte, yte, L=3, probes=["knn", "logreg"], config=FAST, n_jobs=2, store=cache)
    assert first.cached == {"knn": False, "logreg": False}

    def no_fitting(*args, **kwargs):
        raise AssertionError("a cached probe was fitted again")

    with monkeypatch.context() as m:
        m.setattr(probing, "_run_tasks", no_fitting)
        again = probing.probe_scores(ztr, ytr, zte, yte, L=3, probes=["knn", "logreg"], config=FAST, n_jobs=1,
                                       store=cache)
    assert again.cached == {"knn": True, "logreg": True}
    for p in ("knn", "logreg"):
        np.testing.assert_array_equal(first.f1[p], again.f1[p])
    sequential = probing.probe_scores(ztr, ytr, zte, yte, L=3, probes=["knn"], config=FAST)  # no store
    assert sequential.cached == {"knn": False}
    np.testing.assert_array_equal(first.f1["knn"], sequential.f1["knn"])
    # another L or another setting of the same probe is a different entry
    other = probing.probe_scores(ztr, ytr, zte, yte, L=2, probes=["knn"], config=FAST, store=cache)
    assert other.cached == {"knn": False}
    changed = probing.probe_scores(ztr, ytr, zte, yte, L=3, probes=["knn", "logreg"],
                                   config=ProbeConfig(xgb_estimators=20, knn_neighbors=5), store=cache)
    assert changed.cached == {"knn": False, "logreg": True}


def test_affine_decoder_reads_weights_and_bias():
    torch.manual_seed(0)
    W, b, m = torch.randn(30, 8), torch.randn(8), torch.randn(8, 8)
    Wn, bn = probing.affine_decoder(lambda z: (z @ W + b) @ m.T, 30)
    np.testing.assert_allclose(Wn, (W @ m.T).numpy(), atol=1e-4)
    np.testing.assert_allclose(bn, (b @ m.T).numpy(), atol=1e-4)
    z = torch.rand(5, 30)
    rec = probing.truncated_reconstruction(z, [3, 7], (Wn, bn))
    np.testing.assert_allclose(rec, ((z[:, [3, 7]] @ W[[3, 7]] + b) @ m.T).numpy(), atol=1e-4)
    with pytest.raises(ValueError, match="decode must be affine"):
        probing.affine_decoder(lambda z: torch.relu(z @ W - 0.5), 30)


def test_bad_arguments_give_clear_errors():
    x, y = np.zeros((10, 4)), np.zeros((10, 2), bool)
    with pytest.raises(ValueError, match="probes must be a non-empty list"):
        probing.probe_scores(x, y, x, y, L=2, probes=[])
    with pytest.raises(ValueError, match="each entry of probes must be one of 'knn', 'logreg', 'xgboost', got 'svm'"):
        probing.probe_scores(x, y, x, y, L=2, probes=["svm"])
    with pytest.raises(ValueError, match="n_jobs must be a positive int or -1"):
        probing.probe_scores(x, y, x, y, L=2, n_jobs=0)
    with pytest.raises(ValueError, match="x_train and x_test must have the same number of columns"):
        probing.probe_scores(x, y, x[:, :3], y, L=2)
    with pytest.raises(ValueError, match="decoder must be"):
        probing.probe_scores(x, y, x, y, L=2, decoder=(np.zeros((3, 5)), np.zeros(5)))
    with pytest.raises(ValueError, match=r"knn_neighbors must be an int >= 1, got 0"):
        ProbeConfig(knn_neighbors=0)
    with pytest.raises(ValueError, match=r"xgb_learning_rate must be a number in \(0, 1\]"):
        ProbeConfig(xgb_learning_rate=0.0)
    assert probing.result_key("cnn", "latents", 32, "equivariant", 16) == "cnn/latents/equivariant/k16/L32"
    assert probing.result_key("mlp", "activations", 8) == "mlp/activations/L8"


def test_probing_figure_has_one_panel_per_input_and_k():
    import matplotlib

    matplotlib.use("Agg")
    from esae import plots

    groups = probing.GROUP_KEYS
    row = {k: {s: {g: 0.5 for g in groups} for s in ("regular", "equivariant")} for k in (8, 32)}
    fig = plots.probing_bars({"latents": row, "reconstructions": row}, {g: 0.9 for g in groups}, title="t")
    assert len(fig.axes) == 4
    assert [a.get_title() for a in fig.axes[:2]] == ["latents, K = 8", "latents, K = 32"]
    assert len(fig.axes[0].patches) == 3 * len(groups)  # two SAEs and the base activations


def test_task_subsets_and_chapter_config():
    groups = ["S"] * 8 + ["SO"] * 28 + ["SP"] * 32 + ["SPO"] * 112
    assert probing.select_tasks(groups, 0).tolist() == list(range(180))
    sub = probing.select_tasks(groups, 4)
    assert [groups[i] for i in sub] == ["S"] * 4 + ["SO"] * 4 + ["SP"] * 4 + ["SPO"] * 4
    assert sub[0] == 0 and sub[3] == 7  # evenly spread, ends included
    cfg = sae_probing.ProbingConfig(figure3_ks=[8, 16], figure7_panels=["mlp/L8", "cnn/L32"], figure7_ks=[32],
                                    figure7_tasks_per_group=5)
    panels = cfg.panels()
    assert [(p.name, p.ks, p.tasks_per_group) for p in panels] == [("cnn/L32", (8, 16, 32), 0), ("mlp/L8", (32,), 5)]
    with pytest.raises(ValueError, match="each panel must look like '<model>/L<length>'"):
        sae_probing.ProbingConfig(figure7_panels=["resnet/L8"])
    with pytest.raises(ValueError, match="each entry of saes must be one of"):
        sae_probing.ProbingConfig(saes=["regular", "huge"])
    with pytest.raises(ValueError, match=r"n_train must be an int >= 20, got 5"):
        sae_probing.ProbingConfig(n_train=5)


def test_orbit_reconstruction_stats_tells_own_from_orbit_mean():
    torch.manual_seed(0)
    x = torch.randn(64, 8)
    orbit = torch.stack([x.roll(2 * p, dims=1) for p in range(4)], 1)  # a C4 action: cyclic shifts

    class Identity:  # reconstructs each activation itself: not invariant
        W_dec = torch.eye(8)

        def encode(self, v):
            return v

        def decode(self, z):
            return z

    class OrbitMean(Identity):  # averages over the group: invariant, reconstructs the orbit mean
        def encode(self, v):
            return torch.stack([v.roll(2 * p, dims=1) for p in range(4)]).mean(0)

    own = sae_probing.orbit_reconstruction_stats(Identity(), orbit)
    assert own["r2_own"] == pytest.approx(1.0) and own["latent_orbit_change"] > 0.5
    inv = sae_probing.orbit_reconstruction_stats(OrbitMean(), orbit)
    assert inv["r2_orbit_mean"] == pytest.approx(1.0) and inv["latent_orbit_change"] == pytest.approx(0.0, abs=1e-6)
    assert inv["r2_own"] == pytest.approx(own["r2_mean_vs_own"], abs=1e-5)


def test_reconstruction_through_a_map_per_row():
    rng = np.random.default_rng(7)
    z = rng.normal(size=(10, 6)).astype(np.float32)
    W, b = rng.normal(size=(6, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32)
    M = rng.normal(size=(3, 4, 4)).astype(np.float32)
    stack = (np.stack([W @ m.T for m in M]), np.stack([b @ m.T for m in M]))
    rows = np.arange(10) % 3
    rec = probing.truncated_reconstruction(z, [1, 4], stack, rows)
    expected = np.stack([(z[i, [1, 4]] @ W[[1, 4]] + b) @ M[rows[i]].T for i in range(10)])
    np.testing.assert_allclose(rec, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="rows must say which of the 3 decoder maps each row uses"):
        probing.truncated_reconstruction(z, [1], stack)
    y = np.zeros((10, 1), bool)
    y[::2] = True
    with pytest.raises(ValueError, match=r"decoder_rows\[1\] must be \(10,\) ints in 0..2"):
        probing.probe_scores(z, y, z, y, L=2, decoder=stack, decoder_rows=(rows, rows + 1))


def _table(values):
    """values[(sae, k)] -> F1 for every group: a results table for model cnn, L 32."""
    return {probing.result_key("cnn", "reconstructions", 32, sae, k): {g: v for g in probing.GROUP_KEYS}
            for (sae, k), v in values.items()}


def test_claims_of_result2_are_tested_separately_as_stated():
    table = _table({("equivariant", 8): 0.80, ("regular", 8): 0.70, ("wide", 8): 0.75, ("two_layer", 8): 0.60,
                    ("equivariant", 32): 0.90, ("regular", 32): 0.95, ("wide", 32): 0.80, ("two_layer", 32): 0.89})
    c1 = sae_probing.claim_outperforms(table, "cnn", 32, [8, 32])
    assert c1["n_cells"] == 10 and c1["n_held"] == 5 and c1["holds"] is False  # regular wins at K = 32
    assert c1["margins"]["k8/S"] == pytest.approx(0.05)
    c2 = sae_probing.claim_two_layer_only_at(table, "cnn", 32, [8, 32])
    assert c2["holds"] is True and c2["gaps"]["k32/all"] == pytest.approx(0.01)
    assert sae_probing.claim_two_layer_only_at(table, "cnn", 32, [8])["holds"] is None  # one K: not testable
    table[probing.result_key("cnn", "reconstructions", 32, "two_layer", 8)] = {g: 0.79 for g in probing.GROUP_KEYS}
    assert sae_probing.claim_two_layer_only_at(table, "cnn", 32, [8, 32])["holds"] is False  # matched at K = 8 too
    assert sae_probing.claim_outperforms({}, "cnn", 32, [8])["holds"] is None


def test_result2_judge_and_its_cells_agree_on_every_claim():
    """judge_result2's verdicts and result2_cells' signed differences say the same thing: a claim
    holds exactly where every one of its cells is positive."""
    f1 = {"equivariant": (0.80, 0.90), "regular": (0.70, 0.95), "wide": (0.75, 0.80), "two_layer": (0.60, 0.89),
          "invariant": (0.50, 0.60)}
    table = _table({(s, k): v[i] for s, v in f1.items() for i, k in enumerate((8, 32))})
    for (sae, k), v in {("equivariant", 8): 0.9, ("regular", 8): 0.8, ("wide", 8): 0.85, ("two_layer", 8): 0.95,
                        ("invariant", 8): 0.7, ("equivariant", 32): 0.95, ("regular", 32): 0.9, ("wide", 32): 0.9,
                        ("two_layer", 32): 0.99, ("invariant", 32): 0.8}.items():
        table[probing.result_key("cnn", "latents", 32, sae, k)] = {g: (v if g == "S" else v - 0.3) for g in probing.GROUP_KEYS}
    verdicts = sae_probing.judge_result2(table, "cnn", 32, [8, 32])
    cells = sae_probing.result2_cells(table, "cnn", 32, [8, 32])
    assert set(verdicts) == set(cells) == set(sae_probing.RESULT2_CLAIMS)
    assert [verdicts[c][0] for c in (1, 2, 3, 4, 5)] == [False, True, False, True, False]  # 5: the lead shrinks
    for c in (1, 2, 3, 4, 5):
        assert verdicts[c][0] == all(v > 0 for v in cells[c].values()), c
    assert cells[3] == {"k8": pytest.approx(-0.05), "k32": pytest.approx(-0.04)}  # two-layer beats it on S
    assert cells[5]["growth"] == pytest.approx(0.09 - 0.10)
    no_two_layer = [s for s in sae_probing.SAE_NAMES if s != "two_layer"]
    assert set(sae_probing.judge_result2(table, "cnn", 32, [8, 32], no_two_layer)) == {1, 3, 4}


# ----------------------------------------------------------------------------- fair readings (who gets p)

def test_rotation_one_hot_follows_the_rotation_of_the_image():
    from esae import shapes

    ds = shapes.make_dataset(40, 3, layout="upright", pool="probe", jitter=1.0)
    p = sae_probing.rotations_from_canonical(ds)
    hot = sae_probing.rotation_one_hot(p)
    assert hot.shape == (40, 4) and hot.dtype == np.float32
    assert np.array_equal(hot.sum(1), np.ones(40)) and np.array_equal(hot.argmax(1), p)
    for k in range(1, 4):  # rotating every image by g^k turns p into p + k: the one-hot rolls by k
        turned = sae_probing.rotations_from_canonical(shapes.rotate(ds, k))
        assert np.array_equal(turned, (p + k) % 4)
        assert np.array_equal(sae_probing.rotation_one_hot(turned), np.roll(hot, k, axis=1))
    with pytest.raises(ValueError, match=r"p must be \(n,\) ints in 0..3"):
        sae_probing.rotation_one_hot(np.array([0, 4]))
    with pytest.raises(ValueError, match=r"p must be \(n,\) ints in 0..3"):
        sae_probing.rotation_one_hot(np.array([0.5]))


def test_extra_columns_reach_every_probe_and_change_the_cache_entry(monkeypatch):
    from esae import cache

    rng = np.random.default_rng(3)
    ztr, zte = rng.normal(size=(120, 6)).astype(np.float32), rng.normal(size=(60, 6)).astype(np.float32)
    ptr, pte = rng.integers(0, 4, 120), rng.integers(0, 4, 60)
    ytr = np.stack([ptr == 1, ztr[:, 0] > 0], 1)  # task 0 is p itself: only the extra columns tell it
    yte = np.stack([pte == 1, zte[:, 0] > 0], 1)
    W, b = rng.normal(size=(6, 5)).astype(np.float32), np.zeros(5, np.float32)
    extra = (sae_probing.rotation_one_hot(ptr), sae_probing.rotation_one_hot(pte))
    seen = []
    real = probing.fit_and_score

    def spy(probe, xtr, ytr_, xte, yte_, config):
        seen.append((xtr.shape, xte.shape, xtr[:, -4:].copy()))
        return real(probe, xtr, ytr_, xte, yte_, config)

    monkeypatch.setattr(probing, "fit_and_score", spy)
    with_p = probing.probe_scores(ztr, ytr, zte, yte, L=2, probes=["xgboost"], config=FAST, decoder=(W, b), extra=extra,
                                  store=cache)
    assert {s[0] for s in seen} == {(120, 5 + 4)} and {s[1] for s in seen} == {(60, 5 + 4)}
    assert all(np.array_equal(s[2], extra[0]) for s in seen)  # the last 4 columns are p, never truncated
    without = probing.probe_scores(ztr, ytr, zte, yte, L=2, probes=["xgboost"], config=FAST, decoder=(W, b), store=cache)
    assert with_p.f1["xgboost"][0] == pytest.approx(1.0) and without.f1["xgboost"][0] < 0.8
    assert without.cached == {"xgboost": False}  # another entry than the one with p
    with pytest.raises(ValueError, match=r"extra must be \(120, e\) and \(60, e\) arrays"):
        probing.probe_scores(ztr, ytr, zte, yte, L=2, probes=["xgboost"], config=FAST, extra=(extra[0], extra[0]))


@pytest.fixture(scope="module")
def clean_equivariant_sae():
    """An invariant SAE trained on synthetic orbits with an exactly known M, made equivariant with it."""
    from esae import orbits, sae_training, saes

    torch.manual_seed(0)
    acts, m = orbits.synthetic_orbit(1024, 16, n_atoms=48, active=3, seed=1)
    cfg = sae_training.SAETrainConfig(name="invariant", k=4, d_in=16, expansion=4, d_hidden=24, n_epochs=15, batch_size=128,
                              lr=3e-3)
    invariant = sae_training.train_sae(cfg, acts).sae
    held, _ = orbits.synthetic_orbit(200, 16, n_atoms=48, active=3, seed=1)  # same dictionary and M, the first 200 orbits
    return saes.EquivariantTopKSAE.from_invariant(invariant, m), held


class _ExactEquivariant:
    """An equivariant SAE with an exactly invariant encoder: its code is the orbit's canonical member
    (the member ``M^q x`` with the largest first coordinate, a rule on the orbit as a set), its
    decoder the identity, so ``M^p D(E(x)) = x`` exactly for the true ``p``."""

    def __init__(self, m):
        self.m, self.W_dec = m, torch.eye(m.shape[0])
        self.cfg = type("cfg", (), {"group_order": 4})()

    def transform(self, acts, p):
        return acts @ torch.linalg.matrix_power(self.m, int(p) % 4).T

    def encode(self, x):
        members = torch.stack([self.transform(x, q) for q in range(4)], 1)
        return members[torch.arange(len(x)), members[:, :, 0].argmax(1)]

    def decode(self, z):
        return z


def test_estimated_rotation_recovers_the_true_one_on_clean_orbits(clean_equivariant_sae):
    from esae import orbits

    acts, m = orbits.synthetic_orbit(300, 16, n_atoms=48, active=3, seed=4)
    exact = _ExactEquivariant(m)
    canonical = exact.encode(acts[:, 0])  # each orbit's canonical member under the SAE's own rule
    p = np.tile(np.arange(4), len(canonical))
    x = torch.stack([exact.transform(canonical, q) for q in range(4)], 1).reshape(-1, 16)  # row 4 i + p = M^p c_i
    p_hat = sae_probing.estimate_rotation(exact, x, batch_size=128)
    assert p_hat.shape == p.shape and p_hat.dtype == np.int64
    assert np.array_equal(p_hat, p)
    err = sae_probing.rotation_errors(exact, x)
    assert err.shape == (len(x), 4) and np.allclose(err[np.arange(len(x)), p], 0, atol=1e-8)
    # a trained (so only approximately invariant) SAE on the same kind of orbits: far above chance (1/4)
    sae, orbit = clean_equivariant_sae
    trained = sae_probing.estimate_rotation(sae, orbit.reshape(-1, 16))
    assert np.mean(trained == np.tile(np.arange(4), len(orbit))) > 0.6
    with pytest.raises(ValueError, match="sae must be an equivariant SAE"):
        sae_probing.estimate_rotation(torch.nn.Identity(), x)


def test_reconstruction_inputs_of_each_reading(clean_equivariant_sae):
    from esae import sae_training

    sae, orbit = clean_equivariant_sae
    x = orbit[:50].reshape(-1, orbit.shape[-1]).numpy()
    p = np.tile(np.arange(4), 50)
    paper = sae_probing.reconstruction_input(sae, x, x, p, p, "paper")
    assert paper["decoder"][0].shape == (4, sae.W_dec.shape[0], 16) and paper["extra"] is None
    assert all(np.array_equal(r, p) for r in paper["decoder_rows"])
    onehot = sae_probing.reconstruction_input(sae, x, x, p, p, "onehot_p")
    assert np.array_equal(onehot["extra"][0], sae_probing.rotation_one_hot(p)) and np.array_equal(onehot["decoder_rows"][0], p)
    est = sae_probing.reconstruction_input(sae, x, x, p, p, "estimated_p")
    assert np.array_equal(est["decoder_rows"][1], sae_probing.estimate_rotation(sae, x)) and est["extra"] is None
    regular = sae_training._to_inference(sae_training.build_training_sae(sae_training.SAETrainConfig(name="regular", k=4, d_in=16, expansion=4)))
    plain = sae_probing.reconstruction_input(regular, x, x, p, p, "estimated_p")
    assert plain["decoder_rows"] is None and plain["decoder"][0].shape[0] == 1  # no p for an SAE without M
    with pytest.raises(ValueError, match="reading must be one of 'paper', 'onehot_p', 'estimated_p', got 'oracle'"):
        sae_probing.reconstruction_input(sae, x, x, p, p, "oracle")


def test_xgboost_api_and_multi_target_fits_predict_like_the_wrapper():
    rng = np.random.default_rng(11)
    xtr, xte = rng.normal(size=(300, 12)).astype(np.float32), rng.normal(size=(150, 12)).astype(np.float32)
    w = rng.normal(size=(12, 3))
    ytr, yte = (xtr @ w > 0.3), (xte @ w > 0.3)
    for config in (FAST, ProbeConfig(xgb_estimators=10, xgb_max_bin=32), ProbeConfig(xgb_estimators=5,
                                                                                       xgb_tree_method="exact")):
        single = []
        for t in range(3):
            model = probing.make_probe("xgboost", config, len(xtr))
            model.fit(xtr, ytr[:, t].astype(np.int64))
            wrapper = model.predict(xte).astype(bool)
            native = probing.xgboost_predict(xtr, ytr[:, t], xte, config)
            assert native.dtype == bool and np.array_equal(native, wrapper)  # bit for bit the same probe
            assert probing.fit_and_score("xgboost", xtr, ytr[:, t], xte, yte[:, t], config) == probing.f1(yte[:, t], wrapper)
            single.append(native)
        if config.xgb_tree_method == "hist":  # tasks sharing a matrix: one multi-target fit, the same predictions
            multi = probing.xgboost_predict(xtr, ytr, xte, config)
            assert multi.shape == (150, 3) and np.array_equal(multi, np.stack(single, 1))


def test_panels_parse_and_bad_panels_name_the_expected_form():
    assert sae_probing.parse_panel("cnn/L32") == ("cnn", 32)
    assert sae_probing.parse_panel("mlp/L1") == ("mlp", 1)
    for bad in ("cnn/32", "vit/L8", "cnn", "cnn/Lx", "mlp/L-3"):
        with pytest.raises(ValueError, match=r"each panel must look like '<model>/L<length>' with model in mlp, cnn .*got "
                                             + repr(bad)):
            sae_probing.parse_panel(bad)
    with pytest.raises(ValueError, match=r"the truncation length of panel 'cnn/L0' must be"):
        sae_probing.parse_panel("cnn/L0")
    with pytest.raises(ValueError, match=r"the truncation length of panel 'mlp/L300' must be"):
        sae_probing.parse_panel("mlp/L300")
