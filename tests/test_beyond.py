"""Beyond the paper: jittered shapes, the digits with their C4 action, and the seeded protocol."""

import json
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from esae import beyond, digits, shapes
from esae.groups import rotate as rotate_images

# ----------------------------------------------------------------------------- jittered shapes


@pytest.fixture(scope="module", params=["upright", "independent"])
def jittered(request):
    return shapes.make_dataset(200, seed=5, layout=request.param, jitter=1.0)


def test_jitter_zero_is_the_books_dataset_byte_for_byte():
    a, b = shapes.make_dataset(64, 2, layout="upright", pool="train"), shapes.make_dataset(64, 2, layout="upright",
                                                                                           pool="train", jitter=0.0)
    assert torch.equal(a.images, b.images) and b.scales is None and b.offsets is None
    assert torch.equal(shapes._scaled_bank()[-1], shapes.sprites())
    sc, off = np.full((64, 4), len(shapes.SCALE_LEVELS) - 1), np.zeros((64, 4, 2), np.int64)
    assert torch.equal(shapes.render(a.shapes, a.orientations, sc, off), a.images)


def test_jitter_keeps_the_labels_and_changes_the_pixels(jittered):
    plain = shapes.make_dataset(200, seed=5, layout=jittered.layout)
    assert np.array_equal(plain.shapes, jittered.shapes) and np.array_equal(plain.orientations, jittered.orientations)
    assert np.array_equal(shapes.task_labels(plain), shapes.task_labels(jittered))
    assert not torch.equal(plain.images, jittered.images)
    assert len(np.unique(jittered.scales)) > 5 and (jittered.offsets != 0).mean() > 0.5
    # every sprite keeps an empty pixel at its quadrant's edges, so quadrants never touch
    img = jittered.images[:, 0]
    for edge in (0, 31, 32, 63):
        assert img[:, edge, :].sum() == 0 and img[:, :, edge].sum() == 0


@pytest.mark.parametrize("k", [1, 2, 3])
def test_jittered_group_action_is_pixel_exact(jittered, k):
    rotated = shapes.rotate(jittered, k)
    assert torch.equal(rotated.images, rotate_images(jittered.images, k))
    assert torch.equal(rotated.images, shapes.render(rotated.shapes, rotated.orientations, rotated.scales, rotated.offsets))
    for p in range(4):  # the sprite at position p moves to p + k with its scale
        assert np.array_equal(rotated.shapes[:, (p + k) % 4], jittered.shapes[:, p])
        assert np.array_equal(rotated.scales[:, (p + k) % 4], jittered.scales[:, p])
    assert np.array_equal(shapes.task_labels(rotated), shapes.task_labels(shapes.rotate(
        shapes.make_dataset(200, seed=5, layout=jittered.layout), k)))


def test_rotate_jitter_four_times_is_the_identity(jittered):
    sc, off = jittered.scales, jittered.offsets
    for _ in range(4):
        sc, off = shapes.rotate_jitter(sc, off, 1)
    assert np.array_equal(sc, jittered.scales) and np.array_equal(off, jittered.offsets)


def test_canonical_of_jittered_upright_images_is_their_generated_image():
    data = shapes.make_dataset(100, 1, layout="upright", jitter=0.7)
    canon = data.canonical()
    assert (canon.orientations == 0).all()
    assert torch.equal(canon.images, shapes.render(canon.shapes, canon.orientations, canon.scales, canon.offsets))
    assert torch.equal(shapes.rotate(canon, 1).images, rotate_images(canon.images, 1))


def test_jitter_bad_input_names_the_parameter():
    with pytest.raises(ValueError, match=r"jitter must be a number in \[0.0, 1.0\], got 1.5"):
        shapes.make_dataset(10, 0, jitter=1.5)
    s, o = np.zeros((1, 4), np.int64), np.zeros((1, 4), np.int64)
    with pytest.raises(ValueError, match="offsets must stay within max_offsets"):
        shapes.render(s, o, np.zeros((1, 4), np.int64), np.full((1, 4, 2), 20))
    with pytest.raises(ValueError, match="scales and offsets must be given together"):
        shapes.render(s, o, np.zeros((1, 4), np.int64), None)


# ----------------------------------------------------------------------------- digits


def test_digits_load_without_download():
    images, labels = digits.originals()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == torch.float32
    assert 0 <= float(images.min()) and float(images.max()) <= 1
    assert set(labels.tolist()) == set(range(10))


def test_digits_rotation_acts_as_c4():
    data = digits.orbit_dataset(np.arange(50))
    four = data
    for _ in range(4):
        four = digits.rotate(four, 1)
    assert torch.equal(four.images, data.images) and np.array_equal(four.rotations, data.rotations)
    assert torch.equal(digits.rotate(digits.rotate(data, 1), 2).images, digits.rotate(data, 3).images)
    assert torch.equal(digits.rotate(data, 1).images, torch.rot90(data.images, 1, dims=(-2, -1)))
    originals, _ = digits.originals()
    for p in range(4):  # sample 4i + p is the original turned p times
        assert torch.equal(data.images[p::4], rotate_images(originals[:50], p))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_digits_orientation_task_labels_rotate(k):
    data = digits.orbit_dataset(np.arange(0, 400, 3))
    tasks = digits.digit_tasks()
    before, after = digits.task_labels(data, tasks), digits.task_labels(digits.rotate(data, k), tasks)
    index = {(t.family, t.digit, t.orientation): j for j, t in enumerate(tasks)}
    for j, t in enumerate(tasks):
        if t.invariant:
            assert np.array_equal(after[:, j], before[:, j])
        else:  # "digit d at orientation o" after g^k is "digit d at o − k" before
            assert np.array_equal(after[:, j], before[:, index[(t.family, t.digit, (t.orientation - k) % 4)]])
    assert before[:, :10].sum(1).tolist() == [1] * len(data)  # one digit per image
    assert before[:, 10:].sum(1).tolist() == [1] * len(data)  # one (digit, orientation) per image


def test_digit_pools_are_disjoint_seeded_and_cover_everything():
    a, b, c = digits.pool_indices(0), digits.pool_indices(0), digits.pool_indices(1)
    assert all(np.array_equal(a[p], b[p]) for p in digits.POOLS)
    assert not np.array_equal(a["train"], c["train"])
    union = np.concatenate([a[p] for p in digits.POOLS])
    assert len(union) == len(set(union.tolist())) == 1797


def test_digit_task_and_dataset_bad_input():
    with pytest.raises(ValueError, match="orientation must be given exactly for family digit_orientation"):
        digits.DigitTask("digit_orientation", 3)
    with pytest.raises(ValueError, match=r"digit must be an int in \[0, 9\], got 10"):
        digits.DigitTask("digit", 10)
    with pytest.raises(ValueError, match="pool must be one of"):
        digits.pool_dataset("test", 0)


def test_digit_classifier_layers_and_training():
    pools = digits.pool_indices(0)
    images, labels = digits.originals()
    idx = pools["train"][:256]
    net, history = digits.train_classifier(digits.ClassifierConfig(d_hidden=16, n_epochs=2, seed=3),
                                           images[torch.as_tensor(idx)], labels[idx],
                                           test=digits.orbit_dataset(pools["heldout"][:50]))
    x = images[:8]
    assert net.encode(x).shape == (8, 16)
    assert torch.allclose(net.decode(net.encode(x)), net(x))
    assert len(history["epoch_loss"]) == 2 and 0 <= history["test_accuracy"][-1] <= 1


# ----------------------------------------------------------------------------- the protocol


def test_m_of_an_exactly_equivariant_layer_is_found():
    """ψ = the pixels themselves: rotating the image permutes ψ, so M is that permutation."""
    originals, _ = digits.originals()
    flat = lambda x: x.flatten(1)  # noqa: E731
    train = beyond.orbit_activations(flat, originals[:600])
    test = beyond.orbit_activations(flat, originals[600:800])
    assert train.shape == (600, 4, 64)
    fit = beyond.fit_m_on_orbits(train, test, beyond.ComparisonConfig(m_epochs=1))
    assert fit["r2_mean"] > 0.99 and all(v > 0.99 for v in fit["r2"].values())
    assert fit["m4_error"] < 0.05 and fit["r2_identity_mean"] < 0.5


def test_mean_std_and_verdicts():
    assert beyond.verdict([0.10, 0.12, 0.11])[0] == "leads"
    assert beyond.verdict([-0.10, -0.12, -0.11], positive="agrees", negative="disagrees")[0] == "disagrees"
    assert beyond.verdict([0.02, -0.01, 0.01])[0] == "within noise"
    assert beyond.verdict([0.3])[0] == "untested (1 seed)"
    stats = beyond.mean_std([1.0, 2.0, 3.0, None])
    assert stats["n"] == 3 and stats["mean"] == 2.0 and stats["std"] == pytest.approx(1.0)
    assert stats["se"] == pytest.approx(1 / np.sqrt(3))
    assert beyond.family_means(np.array([1.0, 0.0, np.nan, 0.5]), ["a", "b", "b", "c"], ["a", "b", "c"],
                               {"bc": ("b", "c")}) == {"a": 1.0, "b": 0.0, "c": 0.5, "bc": 0.25, "all": 0.5}


def test_line_ratio_places_a_verdict_against_its_two_standard_error_line():
    for diffs in ([0.10, 0.12, 0.11], [0.02, -0.01, 0.01], [-0.10, -0.12, -0.11]):
        v, stats = beyond.verdict(diffs)
        ratio = beyond.line_ratio(stats)
        assert (ratio > 1) == (v != "within noise")  # the ratio crosses 1 exactly where the verdict changes
        assert ratio == pytest.approx(abs(np.mean(diffs)) / (2 * np.std(diffs, ddof=1) / np.sqrt(3)))
    assert beyond.line_ratio(beyond.mean_std([0.3])) is None  # no error bar
    assert beyond.line_ratio(beyond.mean_std([0.3, 0.3])) is None  # se 0
    ratios = {"far": 5.0, "above": 1.8, "below": 0.6, "zero": 0.1, "untested": None}
    assert beyond.near_line(ratios) == ["above", "below"]
    assert beyond.near_line(ratios, factor=1.5) == []
    with pytest.raises(ValueError, match="factor must be a number"):
        beyond.near_line(ratios, factor=0.5)


def test_comparison_config_bad_input():
    with pytest.raises(ValueError, match="saes must be a non-empty list drawn from"):
        beyond.ComparisonConfig(saes=("bogus",))
    with pytest.raises(ValueError, match="n_jobs must be a positive int or -1"):
        beyond.ComparisonConfig(n_jobs=0)


def _tiny_run(seed: int) -> dict:
    """The whole protocol on a tiny digit classifier: seed -> plain numbers."""
    pools = digits.pool_indices(seed)
    images, labels = digits.originals()
    tr = pools["train"][:256]
    net, _ = digits.train_classifier(digits.ClassifierConfig(d_hidden=16, n_epochs=1, seed=seed),
                                     images[torch.as_tensor(tr)], labels[tr])
    train_orbit = beyond.orbit_activations(net.encode, images[torch.as_tensor(tr)])
    held_orbit = beyond.orbit_activations(net.encode, images[torch.as_tensor(pools["heldout"][:64])])
    tasks = digits.digit_tasks()[:3] + digits.digit_tasks()[10:12]
    ptr, pte = digits.orbit_dataset(pools["probe"][:60]), digits.orbit_dataset(pools["heldout"][:60])
    acts = [beyond.orbit_activations(net.encode, d.images, 1)[:, 0].numpy() for d in (ptr, pte)]
    probe_set = beyond.ProbeSet(acts[0], acts[1], digits.task_labels(ptr, tasks), digits.task_labels(pte, tasks),
                                [t.family for t in tasks], ptr.rotations, pte.rotations)
    config = beyond.ComparisonConfig(ks=(4,), d_hidden=32, sae_epochs=1, invariant_epochs=1, batch_size=64, m_epochs=1,
                                     lengths=(2,), xgb_estimators=5, n_jobs=1, seed=seed)
    return beyond.run_seed(train_orbit, held_orbit, probe_set, config, spliced_loss=lambda r: float(r.pow(2).mean()))


@pytest.mark.slow
def test_seeds_change_the_numbers_and_the_same_seed_reproduces_them(tmp_path, monkeypatch):
    monkeypatch.setenv("ESAE_CACHE", str(tmp_path / "cache"))
    a, b = _tiny_run(0), _tiny_run(0)
    monkeypatch.setenv("ESAE_CACHE", str(tmp_path / "cache2"))  # the second seed's probes are fitted, not looked up
    c = _tiny_run(1)
    assert set(a.pop("seconds")) == {"m", "saes", "frontier", "probe"}  # wall times: the one entry that differs
    b.pop("seconds"), c.pop("seconds")
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert a["m"]["r2_mean"] != c["m"]["r2_mean"]
    assert a["frontier"]["regular/k4"]["l1"] != c["frontier"]["regular/k4"]["l1"]
    assert set(a["probe"]) == {f"{n}/k4/L2" for n in beyond.SAES} | {"activations/L2"}
    assert set(a["frontier"]) == {f"{n}/k4" for n in beyond.SAES} | {"base"}


@pytest.mark.slow
def test_the_chapter_writes_verdicts_in_the_summary_schema(smoke_book):
    workspace, runs = smoke_book
    data = json.loads((workspace / "results" / "smoke" / "06b_beyond.json").read_text())
    assert data["verdicts"] and all(set(v) == {"id", "claim", "paper", "this_run", "verdict", "test"}
                                    for v in data["verdicts"])
    assert set(data["shapes"]) == set(data["base_models"]) == {"mlp", "cnn"}  # one comparison per base model
    assert all({"label_r2", "m_r2", "xgboost_f1"} <= set(data["shapes"][m]) for m in data["base_models"])
    assert {"m_r2", "xgboost_f1"} <= set(data["digits"])
    ids = {v["id"] for v in data["verdicts"]}
    assert {f"beyond/jitter/{m}/m_r2" for m in ("mlp", "cnn")} | {"beyond/digits/m_r2"} <= ids
    assert {f"beyond/ceiling/{m}/label_r2" for m in ("mlp", "cnn")} <= ids
    assert [r.seconds for r in runs if r.stem == "06b_beyond"][0] < 120  # generous: the machine is shared


# ----------------------------------------------------------------------------- one seed, from the package

def test_seed_functions_keep_chapter_6b_cache_keys(monkeypatch):
    from esae import autoencoders as ae
    from esae import pipeline

    seen = []
    monkeypatch.setattr(pipeline, "seed_result", lambda kind, key, compute: seen.append((kind, dict(key))) or {})
    train = ae.TrainConfig("mlp", layout="upright", n_train=64, n_heldout=32, data_seed=2, n_epochs=1, seed=2)
    config = beyond.ComparisonConfig(ks=(4,), seed=2)
    pipeline.beyond_shapes_seed(train, config, jitter=1.0, task_indices=np.array([0, 5]), n_probe_train=40, n_probe_test=30)
    pipeline.beyond_shapes_seed(train, config, jitter=1.0, task_indices=[0, 5], n_probe_train=40, n_probe_test=30,
                                readings=("paper", "onehot_p"))
    cls = digits.ClassifierConfig(d_hidden=16, n_epochs=1, seed=2)
    tasks = digits.digit_tasks()[:2]
    pipeline.beyond_digits_seed(cls, config, tasks=tasks)
    # the paper's reading alone: one entry per seed; the key leaves out how many processes fit the probes
    plain = {k: v for k, v in asdict(config).items() if k != "n_jobs"}
    assert seen[0] == ("beyond_shapes", {"version": pipeline.BEYOND_VERSION, "threads": pipeline.TRAIN_THREADS, "jitter": 1.0,
                                         "train": train, "config": plain, "tasks": [0, 5], "probe_sizes": [40, 30]})
    assert seen[1] == ("beyond_shapes_fair", {**seen[0][1], "readings": ["paper", "onehot_p"]})
    assert seen[2] == ("beyond_digits", {"version": pipeline.BEYOND_VERSION, "threads": pipeline.TRAIN_THREADS,
                                         "classifier": cls, "config": plain, "tasks": [t.name for t in tasks]})
    pipeline.beyond_shapes_seed(train, replace(config, n_jobs=1), jitter=1.0, task_indices=[0, 5], n_probe_train=40,
                                n_probe_test=30)
    assert seen[3] == seen[0]  # the probes' worker count does not change a score, so not the entry either


def test_digits_seed_under_every_reading():
    tasks = digits.digit_tasks()[:2] + digits.digit_tasks()[10:12]
    config = beyond.ComparisonConfig(ks=(4,), d_hidden=32, sae_epochs=1, invariant_epochs=1, batch_size=64, m_epochs=1,
                                     lengths=(2,), xgb_estimators=5, n_jobs=1, seed=0)
    run = beyond.digits_seed(digits.ClassifierConfig(d_hidden=16, n_epochs=1, seed=0), config, tasks=tasks,
                             readings=("paper", "onehot_p", "estimated_p"))
    assert set(run["probe"]) == ({"activations/L2"} | {f"{n}/k4/L2" for n in beyond.SAES}
                                 | {f"onehot_p:{n}/k4/L2" for n in beyond.SAES} | {"estimated_p:equivariant/k4/L2"})
    assert set(run["p_hat_accuracy"]) == {"k4"} and 0 <= run["p_hat_accuracy"]["k4"] <= 1
    assert {"accuracy", "accuracy_upright", "m", "frontier"} <= set(run) and "base_model" in run["seconds"]
    for reading in ("paper", "onehot_p", "estimated_p"):
        margin = beyond.lead_margin(run["probe"], [4], 2, "all", reading)
        eq = run["probe"][beyond.reading_key(reading, "equivariant", 4, 2)]["all"]
        rivals = [run["probe"][beyond.reading_key(reading, r, 4, 2)]["all"] for r in beyond.RIVALS]
        assert margin == pytest.approx(eq - max(rivals))
    assert beyond.reading_key("estimated_p", "regular", 4, 2) == "regular/k4/L2"  # the rivals keep the paper's entries
    with pytest.raises(ValueError, match="readings must be a non-empty list drawn from paper, onehot_p, estimated_p"):
        beyond.probe_families({}, None, config, readings=("oracle",))


def test_shapes_seed_runs_the_whole_protocol():
    from esae import autoencoders as ae

    train = ae.TrainConfig("mlp", layout="upright", n_train=64, n_heldout=32, data_seed=1, n_epochs=1, batch_size=32,
                           seed=1)
    config = beyond.ComparisonConfig(ks=(4,), d_hidden=32, sae_epochs=1, invariant_epochs=1, batch_size=64, m_epochs=1,
                                     lengths=(2,), xgb_estimators=5, n_jobs=1, saes=("regular",), seed=1)
    run = beyond.shapes_seed(train, config, jitter=1.0, task_indices=[0, 8, 36, 68], n_probe_train=60, n_probe_test=60)
    assert set(run["probe"]) == {"activations/L2", "regular/k4/L2"}
    assert set(run["probe"]["regular/k4/L2"]) == {"S", "SO", "SP", "SPO", "invariant", "equivariant", "all"}
    assert {"label_r2", "heldout_mse", "frontier"} <= set(run) and "m" not in run  # no M without the equivariant SAE
    with pytest.raises(ValueError, match="jitter must be"):
        beyond.shapes_seed(train, config, jitter=2.0, task_indices=[0], n_probe_train=60, n_probe_test=60)


def test_family_lead_is_judged_per_task_group():
    # the family mean leads (SO far ahead), but SP trails beyond the noise: not "agrees"
    def probe(so: float, sp: float, spo: float) -> dict:
        out = {}
        for name, shift in (("equivariant", 1.0), ("regular", 0.0), ("wide", 0.0)):
            vals = {"SO": 0.5 + shift * so, "SP": 0.5 + shift * sp, "SPO": 0.5 + shift * spo}
            out[f"{name}/k8/L4"] = {**vals, "equivariant": sum(vals.values()) / 3}
        return out

    seeds = [probe(0.30 + e, -0.05 + e, 0.02 + 3 * e) for e in (0.0, 0.004, -0.004)]
    verdict, stats = beyond.family_lead(seeds, [8], 4, "equivariant", ("SO", "SP", "SPO"))
    assert stats["mean"] > 0 and beyond.verdict([beyond.lead_margin(p, [8], 4, "equivariant") for p in seeds],
                                                positive="agrees", negative="differs")[0] == "agrees"
    assert verdict == "partly"
    assert {g: s["verdict"] for g, s in stats["groups"].items()} == {"SO": "agrees", "SP": "differs", "SPO": "agrees"}
    every = [probe(0.3 + e, 0.1 + e, 0.2 + e) for e in (0.0, 0.01, -0.01)]
    assert beyond.family_lead(every, [8], 4, "equivariant", ("SO", "SP", "SPO"))[0] == "agrees"
    none = [probe(-0.3 + e, -0.1 + e, 0.0 + 5 * e) for e in (0.0, 0.01, -0.01)]
    assert beyond.family_lead(none, [8], 4, "equivariant", ("SO", "SP", "SPO"))[0] == "differs"
    assert beyond.family_lead(every[:1], [8], 4, "equivariant", ("SO",))[0].startswith("untested")


def test_always_yes_f1_is_the_base_rate_floor():
    from esae import probing

    labels = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1], [0, 0, 1]], dtype=bool)
    np.testing.assert_allclose(probing.always_yes_f1(labels), [2 * 0.5 / 1.5, 0.0, 1.0])
    # a probe that says yes everywhere scores exactly that F1
    assert probing.f1(labels[:, 0], np.ones(4, bool)) == pytest.approx(probing.always_yes_f1(labels)[0])
    with pytest.raises(ValueError, match="labels"):
        probing.always_yes_f1(np.zeros(3))


def test_shapes_probe_sets_are_the_seeds_probing_images():
    train, test = beyond.shapes_probe_sets(3, 12, 10, 1.0)
    again = beyond.shapes_probe_sets(3, 12, 10, 1.0)[1]
    assert len(train) == 12 and len(test) == 10 and torch.equal(test.images, again.images)
    assert not torch.equal(beyond.shapes_probe_sets(4, 12, 10, 1.0)[1].images, test.images)
