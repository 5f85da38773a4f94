"""The SAEs of chapter 5 (esae.saes and the modules that train and use them: sae_kernels, sae_training,
sae_evaluation), on synthetic activations with a known M — never the base models."""

import os
import subprocess
import sys

import numpy as np
import pytest
import sae_lens
import torch
from sae_lens.saes.sae import TrainStepInput
from sae_lens.saes.topk_sae import TopKSAE, TopKTrainingSAE, TopKTrainingSAEConfig

from esae import orbits, sae_evaluation, sae_kernels, sae_training, saes
from esae.runtime import repo_root

D, EXPANSION, HIDDEN, K = 16, 4, 24, 4  # small sizes: 64 latents (256 for the wide SAE)


def config(name, k=K, **kw):
    return sae_training.SAETrainConfig(name=name, k=k, d_in=D, expansion=EXPANSION, d_hidden=HIDDEN, **kw)


def inference_sae(name, seed=0, m=None):
    """An untrained inference SAE of each kind, as training would produce it."""
    sae = sae_training._to_inference(sae_training.build_training_sae(config("invariant" if name == "equivariant" else name, seed=seed)))
    if name == "equivariant":
        sae = saes.EquivariantTopKSAE.from_invariant(sae, orbits.synthetic_orbit(8, D)[1] if m is None else m)
    return sae


def step_input(sae_in, dead=None):
    return TrainStepInput(sae_in=sae_in, coefficients={}, dead_neuron_mask=dead, n_training_steps=0,
                          is_logging_step=False)


@pytest.fixture(scope="module")
def orbit():
    return orbits.synthetic_orbit(1024, D, n_atoms=48, active=3, seed=1)


# --- TopK ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", saes.SAE_NAMES)
def test_topk_keeps_exactly_k_latents(name):
    sae = inference_sae(name)
    with torch.no_grad():
        sae.b_enc.add_(100.0)  # every pre-activation positive: the ReLU after TopK zeroes nothing
    z = sae.encode(torch.randn(50, D))
    assert z.shape == (50, sae.cfg.d_sae)
    assert ((z != 0).sum(-1) == K).all()


@pytest.mark.parametrize("name", ["regular", "two_layer"])
def test_training_pass_keeps_k_latents(name):
    sae = sae_training.build_training_sae(config(name))
    with torch.no_grad():
        sae.b_enc.add_(100.0)
    acts = sae.training_forward_pass(step_input(torch.randn(20, D))).feature_acts.to_dense()
    assert ((acts != 0).sum(-1) == K).all()


# --- the sparse training pass is sae-lens's TopK, exactly ------------------------------------------

@pytest.mark.parametrize("name", ["regular", "two_layer"])
@pytest.mark.parametrize("with_dead", [False, True])
def test_sparse_pass_matches_sae_lens_dense_pass(name, with_dead):
    torch.manual_seed(0)
    fast = sae_training.build_training_sae(config(name)).to(torch.float64)
    if name == "regular":
        ref = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=D, d_sae=D * EXPANSION, k=K)).to(torch.float64)
    else:  # the same class, through sae-lens's generic (dense) TrainingSAE.training_forward_pass
        ref = sae_training.build_training_sae(config(name)).to(torch.float64)
        ref.training_forward_pass = lambda s, r=ref: super(sae_kernels._SparseTopKTraining, r).training_forward_pass(s)
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(32, D, dtype=torch.float64)
    dead = torch.rand(D * EXPANSION) < 0.4 if with_dead else None
    results = []
    for sae in (fast, ref):
        out = sae.training_forward_pass(step_input(x, dead))
        out.loss.backward()
        results.append((out, {n: p.grad for n, p in sae.named_parameters()}))
    (fo, fg), (ro, rg) = results
    assert set(fo.losses) <= set(ro.losses)
    for key, value in fo.losses.items():
        assert value.item() == pytest.approx(ro.losses[key].item(), rel=1e-12)
    if with_dead:
        assert fo.losses["auxiliary_reconstruction_loss"] > 0
    torch.testing.assert_close(fo.feature_acts.to_dense(), ro.feature_acts, rtol=1e-12, atol=1e-12)
    for n in rg:
        torch.testing.assert_close(fg[n], rg[n], rtol=1e-10, atol=1e-10, msg=n)


@pytest.mark.parametrize("sddmm", [True, False], ids=["sampled_addmm", "dense_gather"])
def test_sparse_kernels_gradcheck(sddmm, monkeypatch):
    monkeypatch.setattr(sae_kernels, "_SDDMM_DEVICES", ("cpu",) if sddmm else ())
    torch.manual_seed(0)
    h = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 9, dtype=torch.float64, requires_grad=True)
    b = torch.randn(9, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        idx = torch.addmm(b, h, w).topk(3).indices
    groups = sae_kernels._latent_groups(idx, 9)
    assert torch.autograd.gradcheck(
        lambda h, w, b: sae_kernels._TopKGather.apply(h, w, b, torch.addmm(b, h, w).detach(), None, idx, groups), (h, w, b))
    norms = torch.rand(9, dtype=torch.float64) + 0.5
    assert torch.autograd.gradcheck(
        lambda h, w, b: sae_kernels._TopKGather.apply(h, w, b, (torch.addmm(b, h, w) * norms).detach(), norms, idx, groups),
        (h, w, b))
    vals = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    w_dec = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, wd: sae_kernels.sparse_decode(v, idx, wd), (vals, w_dec))


@pytest.mark.parametrize("compact", [False, True], ids=["dense_groups", "compact_groups"])
def test_bias_gradient_as_segment_sums_equals_index_add(compact):
    """Off the CPU the encoder bias's gradient is summed per latent in the groups' sorted order
    (a GPU's ``index_add_`` adds floats atomically, in another order on every run): the same sums
    as ``index_add_``, over dense groups (sae_kernels) and compact ones (sae_stack's CPU path)."""
    from esae import sae_stack

    gen = torch.Generator().manual_seed(0)
    n_latents = 400
    idx = torch.randint(n_latents, (16, 4), generator=gen)
    values = torch.randn(16, 4, dtype=torch.float64, generator=gen)
    if compact:
        groups = sae_stack._groups(idx, n_latents, compact=True)
        assert groups.active is not None
    else:
        groups = sae_kernels._latent_groups(idx, n_latents)
    expected = torch.zeros(n_latents, dtype=torch.float64).index_add_(0, idx.flatten(), values.flatten())
    got = sae_kernels._bias_grad_segments(values, groups, n_latents)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sae_kernels._bias_grad(idx, values, groups, n_latents), expected, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["regular", "two_layer"])
def test_training_sae_is_drawn_on_the_cpu_and_moved_to_its_device(name):
    """Off the CPU the SAE is initialised on the CPU and then moved (a GPU starts from the CPU's
    initial weights; only the CPU generator is seeded, and restored): on the ``meta`` device,
    which a CPU-only machine has, every weight and the config name the device."""
    cpu_state = torch.random.get_rng_state()
    moved = sae_training.build_training_sae(config(name), "meta")
    assert torch.equal(torch.random.get_rng_state(), cpu_state)
    assert moved.cfg.device == "meta"
    assert {p.device.type for p in moved.parameters()} == {"meta"}
    on_cpu = sae_training.build_training_sae(config(name))
    assert {p.device.type for p in on_cpu.parameters()} == {"cpu"} and on_cpu.cfg.device == "cpu"


# --- save / load through sae-lens -------------------------------------------------------------------

@pytest.mark.parametrize("name", saes.SAE_NAMES)
def test_save_load_round_trip_is_exact(name, tmp_path):
    sae = inference_sae(name)
    sae.save_model(tmp_path)
    back = sae_lens.SAE.load_from_disk(tmp_path)
    assert type(back) is type(sae)
    expected = {"regular": TopKSAE, "wide": TopKSAE, "two_layer": saes.TwoLayerTopKSAE,
                "invariant": saes.TwoLayerTopKSAE, "equivariant": saes.EquivariantTopKSAE}[name]
    assert type(back) is expected
    x = torch.randn(40, D)
    torch.testing.assert_close(back.encode(x), sae.encode(x), rtol=0, atol=0)
    z = sae.encode(x)
    torch.testing.assert_close(back.decode(z), sae.decode(z), rtol=0, atol=0)
    if name == "equivariant":
        assert torch.equal(back.m, sae.m) and not torch.equal(back.m, torch.eye(D))
        p = torch.arange(40) % 4
        torch.testing.assert_close(back.reconstruct(x, p), sae.reconstruct(x, p), rtol=0, atol=0)


def test_trained_sae_round_trip_and_unit_norm_dictionary(orbit, tmp_path):
    acts, _ = orbit
    trained = sae_training.train_sae(config("two_layer", n_epochs=1, batch_size=128), acts).sae
    torch.testing.assert_close(trained.W_dec.norm(dim=-1), torch.ones(trained.cfg.d_sae))
    trained.save_model(tmp_path)
    back = saes.load_sae(tmp_path)
    x = acts[:20, 1]
    torch.testing.assert_close(back.decode(back.encode(x)), trained.decode(trained.encode(x)), rtol=0, atol=0)
    assert back.cfg.metadata.esae_training == {"name": "two_layer", "objective": "reconstruction"}


# --- the invariance loss and M -------------------------------------------------------------------

def test_orbit_batches_pair_rotated_inputs_with_canonical_targets(orbit):
    acts, _ = orbit
    batches = sae_training.orbit_batches(acts, 100, pairs=True, generator=torch.Generator().manual_seed(0))
    batch = next(batches)
    assert batch.shape == (100, 2, D)
    canonical = acts[:, 0]
    # every target is the canonical activation of the very image whose rotation is the input
    i = torch.cdist(batch[:, 1], canonical).argmin(1)
    torch.testing.assert_close(batch[:, 1], canonical[i])
    dist = (acts[i] - batch[:, :1]).norm(dim=-1)  # (100, 4): the input is one rotation of image i
    assert (dist.min(1).values < 1e-6).all()
    rotated = dist.argmin(1)
    assert (rotated != 0).any()  # and rotations other than the identity do occur
    plain = next(sae_training.orbit_batches(acts, 100, pairs=False, generator=torch.Generator().manual_seed(0)))
    assert plain.shape == (100, D)


def test_invariance_loss_uses_the_canonical_target(orbit):
    acts, _ = orbit
    sae = sae_training.build_training_sae(config("invariant"))
    x, target = acts[:64, 1], acts[:64, 0]
    loss = sae.training_forward_pass(step_input(torch.stack([x, target], 1))).losses["mse_loss"]
    with torch.no_grad():
        recon = sae.decode(sae.encode(x))
    assert loss.item() == pytest.approx((target - recon).pow(2).sum(-1).mean().item(), rel=1e-5)
    assert loss.item() != pytest.approx((x - recon).pow(2).sum(-1).mean().item(), rel=1e-3)
    with pytest.raises(ValueError, match=r"sae_in must be \(B, d_in\) or \(B, 2, d_in\)"):
        sae.training_forward_pass(step_input(torch.randn(4, 3, D)))


def test_equivariant_reconstruction_applies_m_to_the_power_p():
    _, m = orbits.synthetic_orbit(8, D, seed=3)
    sae = inference_sae("equivariant", m=m)
    x = torch.randn(12, D)
    canonical = sae.decode(sae.encode(x))
    for p in range(6):
        expected = canonical @ torch.linalg.matrix_power(m, p % 4).t()
        torch.testing.assert_close(sae.reconstruct(x, p), expected)
    powers = torch.tensor([0, 1, 2, 3, 3, 2, 1, 0, 5, 6, 7, 4])
    per_row = sae.reconstruct(x, powers)
    for i, p in enumerate(powers.tolist()):
        torch.testing.assert_close(per_row[i], canonical[i] @ torch.linalg.matrix_power(m, p % 4).t())
    torch.testing.assert_close(sae.dictionary(1), sae.W_dec @ m.t())
    torch.testing.assert_close(sae_evaluation.reconstruct(sae, x, 2), sae.reconstruct(x, 2))
    with pytest.raises(ValueError, match="p .* is required"):
        sae_evaluation.reconstruct(sae, x)
    with pytest.raises(ValueError, match=r"p must be an int or a tensor of shape \(12,\)"):
        sae.reconstruct(x, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"m must have shape \(16, 16\)"):
        saes.EquivariantTopKSAE.from_invariant(inference_sae("invariant"), torch.eye(3))


def test_canonical_orbit_reindexes_each_orbit_from_its_canonical_member():
    orbit = torch.arange(3)[:, None] * 10 + torch.arange(4)[None]  # entry [i, q] = 10 i + q
    out = sae_training.canonical_orbit(orbit, np.array([0, 1, 3]))
    assert out.tolist() == [[0, 1, 2, 3], [11, 12, 13, 10], [23, 20, 21, 22]]
    with pytest.raises(ValueError, match=r"rotation must have shape \(3,\)"):
        sae_training.canonical_orbit(orbit, np.array([0, 1]))


def test_canonical_rotation_picks_one_member_per_orbit():
    shapes = pytest.importorskip("esae.shapes")  # chapter 2's dataset (issue 3)
    data = shapes.make_dataset(60, seed=0)
    c = sae_training.canonical_rotation(data.shapes, data.orientations)
    canon = [shapes.rotate(data[i:i + 1], int(c[i])) for i in range(len(data))]
    for k in range(1, 4):  # from whichever member of the orbit we start, the same image comes out
        turned = shapes.rotate(data, k)
        c_k = sae_training.canonical_rotation(turned.shapes, turned.orientations)
        for i in range(len(data)):
            again = shapes.rotate(turned[i:i + 1], int(c_k[i]))
            assert torch.equal(again.images, canon[i].images)
    # and it is the member whose label code is the orbit key of chapter 2
    for i in range(len(data)):
        s_, o_ = canon[i].shapes, canon[i].orientations
        assert ((s_ * 4 + o_) * 32 ** np.arange(4)).sum() == data[i:i + 1].orbit_keys()[0]


# --- configuration errors --------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(name="regular", k=0), r"k must be in 1\.\.2048, got 0"),
    (dict(name="regular", k=4096), r"k must be in 1\.\.2048, got 4096"),
    (dict(name="wide", k=9000), r"k must be in 1\.\.8192, got 9000"),
    (dict(name="regular", k=8, expansion=0), r"expansion must be an int in \[1, 1024\], got 0"),
    (dict(name="two_layer", k=8, d_hidden=0), r"d_hidden must be an int >= 1, got 0"),
    (dict(name="equivariant", k=8), r"name must be one of 'regular', 'wide', 'two_layer', 'invariant'"),
    (dict(name="regular", k=8, lr=0.0), r"lr must be a number in \(0.0, 1.0\]"),
])
def test_bad_configuration_gives_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sae_training.SAETrainConfig(**kwargs)


def test_bad_sae_lens_configs_give_clear_errors():
    with pytest.raises(ValueError, match=r"k must be in 1\.\.64, got 65"):
        saes.TwoLayerTopKSAEConfig(d_in=D, d_sae=64, k=65)
    with pytest.raises(ValueError, match=r"d_hidden must be an int >= 1, got -3"):
        saes.TwoLayerTopKTrainingSAEConfig(d_in=D, d_sae=64, k=4, d_hidden=-3)
    with pytest.raises(ValueError, match="batch_size must be at most the number of training images"):
        sae_training.train_sae(config("regular", batch_size=64), torch.randn(10, 4, D))
    with pytest.raises(ValueError, match=r"acts must be \(n, G, 16\) orbit activations"):
        sae_training.train_sae(config("regular"), torch.randn(10, D))


# --- training ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", saes.TRAINED_NAMES)
def test_short_training_lowers_the_loss(name, orbit):
    acts, _ = orbit
    result = sae_training.train_sae(config(name, n_epochs=20, batch_size=128, lr=3e-3), acts)
    mse = torch.tensor(result.history["mse"])
    assert result.history["steps"] == 20 * (1024 // 128) == len(mse)
    assert mse[-8:].mean() < 0.8 * mse[:8].mean()  # the last epoch against the first
    assert result.sae.cfg.d_sae == config(name).d_sae


def test_m_turns_the_invariant_sae_equivariant(orbit):
    acts, m = orbit
    invariant = sae_training.train_sae(config("invariant", n_epochs=15, batch_size=128, lr=3e-3), acts).sae
    equivariant = saes.EquivariantTopKSAE.from_invariant(invariant, m)
    x, p = acts.reshape(-1, D), torch.arange(4).repeat(acts.shape[0])
    inv, eq = sae_evaluation.evaluate(invariant, x, p), sae_evaluation.evaluate(equivariant, x, p)
    # without M the invariant SAE returns canonical activations: poor on rotated inputs
    assert eq["explained_variance"] > inv["explained_variance"] + 0.2
    assert eq["l0"] == inv["l0"] and eq["l1"] == inv["l1"]  # same encoder, same latents
    # and its latents barely depend on the rotation of the input
    z = invariant.encode(acts.reshape(-1, D)).view(acts.shape[0], 4, -1)
    spread = (z - z.mean(1, keepdim=True)).pow(2).sum() / z.pow(2).sum()
    assert spread < 0.5


# --- metrics and features ---------------------------------------------------------------------------

def test_evaluate_metrics(orbit):
    acts, _ = orbit
    sae = inference_sae("regular")
    x = acts[:200, 0]
    images = x.view(-1, 1, 4, 4)
    decode = lambda a: a.view(-1, 1, 4, 4)  # noqa: E731 - a "base decoder" that just reshapes
    metrics = sae_evaluation.evaluate(sae, x, decode=decode, images=images, batch_size=64)
    z = sae.encode(x)
    recon = sae.decode(z)
    assert metrics["l0"] == pytest.approx(float((z != 0).sum(-1).float().mean()))
    assert metrics["l1"] == pytest.approx(float(z.abs().sum(-1).mean()), rel=1e-5)
    assert metrics["dead"] == pytest.approx(float(((z != 0).sum(0) == 0).float().mean()))
    assert metrics["explained_variance"] == pytest.approx(
        1 - float((x - recon).pow(2).sum() / (x - x.mean(0)).pow(2).sum()), rel=1e-5)
    assert metrics["spliced_mse"] == pytest.approx(float((recon - x).pow(2).mean()), rel=1e-5)
    assert sae_evaluation.spliced_mse(decode, x, images) == 0.0
    assert sae_evaluation.evaluate(sae, x)["spliced_mse"] is None
    with pytest.raises(ValueError, match="images are required"):
        sae_evaluation.evaluate(sae, x, decode=decode)


def test_feature_scores_separate_invariant_from_rotating_directions():
    # M: identity on the first 4 coordinates, 90° rotations on the pairs after them
    block = torch.tensor([[0.0, -1.0], [1.0, 0.0]])
    m = torch.block_diag(torch.eye(4), *[block] * 6)
    w_dec = torch.zeros(3, D)
    w_dec[0, 1] = 1.0                      # inside the fixed subspace: invariant
    w_dec[1, 6] = 1.0                      # inside a rotation plane: moves to an orthogonal direction
    w_dec[2, 0], w_dec[2, 8] = 0.8, 0.6    # 64% of its energy invariant
    scores = sae_evaluation.feature_scores(w_dec, m)
    torch.testing.assert_close(scores, torch.tensor([1.0, 0.0, 0.64]))
    torch.testing.assert_close(sae_evaluation.invariant_fraction(w_dec, m), torch.tensor([1.0, 0.0, 0.64]))
    assert sae_evaluation.classify_features(scores, 0.5).tolist() == [True, False, True]
    # a component in a direction the data never visits, where M stays at its identity start,
    # would fake invariance; projected onto the data's span the score is the true one
    m_fit = m.clone()
    m_fit[12:, :], m_fit[:, 12:] = 0.0, 0.0
    m_fit[12:, 12:] = torch.eye(4)
    acts = torch.randn(500, D) * torch.cat([torch.ones(12), torch.zeros(4)])
    basis = sae_evaluation.data_basis(acts)
    assert basis.shape == (12, D)
    rotating_plus_unused = torch.zeros(1, D)
    rotating_plus_unused[0, 6], rotating_plus_unused[0, 14] = 0.6, 0.8
    assert sae_evaluation.feature_scores(rotating_plus_unused, m_fit).item() == pytest.approx(0.64)
    assert sae_evaluation.feature_scores(rotating_plus_unused, m_fit, basis).item() == pytest.approx(0.0, abs=1e-6)
    assert sae_evaluation.invariant_fraction(rotating_plus_unused, m_fit, basis=basis).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="threshold must be a number in"):
        sae_evaluation.classify_features(scores, 2.0)


def test_feature_images_rotate_with_m():
    _, m = orbits.synthetic_orbit(8, D, seed=2)
    sae = inference_sae("equivariant", m=m)
    decode = lambda a: a.view(-1, 1, 4, 4) * 2  # noqa: E731 - linear decoder
    images = sae_evaluation.feature_images(sae, decode, [0, 5], torch.tensor([1.0, 2.0]))
    assert images.shape == (2, 4, 1, 4, 4)
    # with a linear decoder the image is the decoded transformed feature itself
    expected = decode((torch.tensor([1.0, 2.0])[:, None] * sae.W_dec[[0, 5]]) @ sae.m_power(3).t())
    torch.testing.assert_close(images[:, 3], expected.detach())


def test_synthetic_orbit_is_an_exact_representation():
    acts, m = orbits.synthetic_orbit(20, D, seed=0)
    torch.testing.assert_close(torch.linalg.matrix_power(m, 4), torch.eye(D), atol=1e-5, rtol=0)
    torch.testing.assert_close(acts[:, 1], acts[:, 0] @ m.t())
    with pytest.raises(ValueError, match="d - invariant_dims must be even"):
        orbits.synthetic_orbit(4, D, invariant_dims=3)


# --- sae-lens registry ----------------------------------------------------------------------------------

REIMPORT = """
import importlib, sys
import sae_lens
from esae import orbits, saes
from esae.sae_training import SAETrainConfig, _to_inference, build_training_sae

cfg = SAETrainConfig(name="two_layer", k=4, d_in=16, expansion=4, d_hidden=24)
two = _to_inference(build_training_sae(cfg))
two.save_model(sys.argv[1] + "/two")
saes.EquivariantTopKSAE.from_invariant(two, orbits.synthetic_orbit(8, 16)[1]).save_model(sys.argv[1] + "/eq")
reloaded = importlib.reload(saes)
reloaded.ensure_registered()  # idempotent
importlib.import_module("esae.saes")
assert type(sae_lens.SAE.load_from_disk(sys.argv[1] + "/two")) is reloaded.TwoLayerTopKSAE
assert type(sae_lens.SAE.load_from_disk(sys.argv[1] + "/eq")) is reloaded.EquivariantTopKSAE
assert sae_lens.registry.get_sae_training_class("two_layer_topk")[0] is reloaded.TwoLayerTopKTrainingSAE
print("ok")
"""


def test_registration_survives_reimport(tmp_path):
    """Reloading esae.saes (an edited module in a notebook session) re-registers its classes in place
    of the stale ones. In a fresh process: the reload would leave the other modules of this session
    holding the old classes."""
    env = {**os.environ, "PYTHONPATH": str(repo_root())}
    proc = subprocess.run([sys.executable, "-c", REIMPORT, str(tmp_path)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_foreign_class_under_our_name_is_refused():
    class Impostor(TopKSAE):
        pass

    with pytest.raises(ValueError, match="already registered by"):
        saes._register(saes.TWO_LAYER_ARCH, Impostor, saes.TwoLayerTopKSAEConfig, training=False)


def test_invariant_targets_under_upright_are_the_generated_images_activations():
    from esae import autoencoders, shapes

    torch.manual_seed(0)
    net = autoencoders.build("mlp").eval()
    data = shapes.make_dataset(24, 5, layout="upright")
    assert len(set(data.rotations.tolist())) > 1
    targets = sae_training.training_targets(net, data, "generated")
    generated = autoencoders.activations(net, data.canonical().images)
    torch.testing.assert_close(targets[:, 0], generated)
    # [i, p] is the generated image rotated by p; the sample itself sits at its own rotation
    own = autoencoders.activations(net, data.images)
    torch.testing.assert_close(targets[torch.arange(24), torch.as_tensor(data.rotations)], own)
    np.testing.assert_array_equal(sae_training.target_rotation(data, "generated"), (-data.rotations) % 4)
    indep = shapes.make_dataset(8, 5, layout="independent")
    np.testing.assert_array_equal(sae_training.target_rotation(indep, "generated"), np.zeros(8))
