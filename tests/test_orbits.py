"""Any model, any C4 action: orbit activations, fit_m and the invariant/equivariant SAE on a model
and image size the book does not use (3×32×32 colour images, a conv net with a 48-d layer)."""

import pytest
import torch
from torch import nn

from esae import equivariance as eq
from esae import orbits, sae_evaluation, sae_training, saes
from esae.groups import rotate


def conv_net(seed: int = 0) -> nn.Module:
    """A seeded, untrained conv net on 3×32×32 images whose 48-d output is the studied layer."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 12, 3, stride=2, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(12 * 8 * 8, 48)).eval()


def images(n: int = 256, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=gen)


def test_orbit_of_a_callable_on_colour_images():
    net, x = conv_net(), images(40)
    acts = orbits.orbit(net, x, batch_size=16)
    assert acts.shape == (40, 4, 48) and acts.device.type == "cpu"
    with torch.no_grad():
        assert torch.allclose(acts[:, 2], net(rotate(x, 2)), atol=1e-6)
        assert torch.allclose(acts[:, 0], net(x), atol=1e-6)
    a, rotated = eq.orbit_activations(net, x)
    assert a.shape == (40, 48) and rotated.shape == (3, 40, 48)
    assert torch.equal(rotated[0], acts[:, 1]) and torch.equal(a, acts[:, 0])
    assert torch.equal(sae_training.orbit_acts(net, x), acts)


def test_feature_maps_are_flattened_and_a_custom_action_is_used():
    x = images(10)
    conv = nn.Conv2d(3, 2, 3, padding=1).eval()
    flipped = orbits.orbit(conv, x, order=2, act=lambda p, t: t.flip(-1) if p % 2 else t)
    assert flipped.shape == (10, 2, 2 * 32 * 32)
    with torch.no_grad():
        assert torch.allclose(flipped[:, 1], conv(x.flip(-1)).flatten(1), atol=1e-6)


def test_base_autoencoders_keep_their_encode():
    from esae.autoencoders import MLPAutoencoder, activations

    torch.manual_seed(0)
    net = MLPAutoencoder().eval()
    x = torch.rand(8, 1, 64, 64)
    acts, rotated = eq.orbit_activations(net, x)
    assert torch.equal(acts, activations(net, x).cpu())
    assert torch.equal(rotated[2], activations(net, rotate(x, 3)).cpu())


@pytest.mark.parametrize("kwargs, message", [
    (dict(inputs=torch.rand(4, 3, 32, 30)), r"square last two axes"),
    (dict(order=3), r"order must be 1, 2 or 4 for the default rotation action"),
    (dict(act=lambda p, t: t[:, :1]), r"act\(1, inputs\) must return inputs of shape \(4, 3, 32, 32\)"),
    (dict(model=lambda t: t.sum()), r"activations\(inputs\) must return a tensor \(4, d\) for 4 inputs"),
    (dict(model="net"), r"model must be a callable"),
    (dict(inputs=[1, 2]), r"inputs must be a tensor"),
])
def test_bad_input_names_the_parameter(kwargs, message):
    args = dict(model=conv_net(), inputs=torch.rand(4, 3, 32, 32))
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=message):
        orbits.orbit(args.pop("model"), args.pop("inputs"), **args)


def test_fit_m_and_invariant_sae_on_a_model_the_book_does_not_use():
    """The workflow of the "Use it on your model" page, small: M fitted on a 3×32×32 conv net's
    activations predicts held-out rotations far better than the identity; an invariant SAE trained
    on its orbits becomes equivariant with that M; features get scores."""
    net = conv_net()
    train, test = images(512, seed=1), images(128, seed=2)
    a_train, r_train = eq.orbit_activations(net, train)
    a_test, r_test = eq.orbit_activations(net, test)
    fit = eq.fit_m(a_train, r_train, eq.FitConfig(epochs=10, init="lstsq", lr=1e-3))
    fitted, identity = eq.r2(a_test, r_test, fit.m), eq.r2(a_test, r_test, torch.eye(48))
    assert fitted["pooled_mean"] > identity["pooled_mean"] + 0.2
    assert set(fitted["pooled"]) == {1, 2, 3, 4}

    acts = sae_training.orbit_acts(net, train)
    config = sae_training.SAETrainConfig(name="invariant", k=8, d_in=48, expansion=4, d_hidden=64, n_epochs=3,
                                 batch_size=64, lr=3e-3)
    result = sae_training.train_sae(config, acts)
    invariant = result.sae
    assert isinstance(invariant, saes.TwoLayerTopKSAE) and invariant.cfg.d_sae == 192
    assert result.history["mse"][-1] < result.history["mse"][0]
    equivariant = saes.EquivariantTopKSAE.from_invariant(invariant, fit.m)
    test_orbit = sae_training.orbit_acts(net, test)
    p = torch.arange(len(test)) % 4
    x = test_orbit[torch.arange(len(test)), p]
    metrics = sae_evaluation.evaluate(equivariant, x, p)
    assert metrics["l0"] <= 8 and metrics["dead"] < 1.0
    # (noise images: no orbit member is identifiable as upright, so reconstruction quality is not
    # asserted here; the book page uses upright glyphs where it is)
    one = p == 1
    with torch.no_grad():
        expected = eq.transform(invariant.decode(invariant.encode(x[one])), fit.m, 1)
        assert torch.allclose(equivariant.reconstruct(x[one], 1), expected, atol=1e-4)
    scores = sae_evaluation.feature_scores(equivariant.W_dec, equivariant.m, sae_evaluation.data_basis(a_train))
    assert scores.shape == (192,) and bool(((scores >= -1 - 1e-5) & (scores <= 1 + 1e-5)).all())
