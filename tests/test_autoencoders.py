import pytest
import torch
from torch import nn

from esae import autoencoders as ae
from esae import cache, params, pipeline, shapes
from esae.equivariance import FitConfig
from esae.groups import rotate as rotate_images

TINY = dict(n_train=256, n_heldout=64, n_epochs=3, batch_size=64)


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ESAE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def tiny_profile(tmp_path, monkeypatch, tmp_cache):
    """A params dir whose smoke profile trains tiny models, so the contract functions run fast."""
    params = tmp_path / "params"
    params.mkdir()
    (params / "smoke.yaml").write_text(
        "common: {seed: 2, device: auto}\n"
        "02_dataset: {layout: upright}\n"
        "03_base_models: {n_train: 128, n_heldout: 32, mlp_epochs: 1, cnn_epochs: 1, batch_size: 64, lr: 0.001}\n")
    monkeypatch.setenv("ESAE_PARAMS", str(params))
    return "smoke"


@pytest.mark.parametrize("kind,n_params", [("mlp", 2_233_088), ("cnn", 4_204_161)])
def test_architectures_shapes_and_parameter_counts(kind, n_params):
    torch.manual_seed(0)
    model = ae.build(kind).eval()
    assert ae.n_parameters(model) == n_params
    x = torch.rand(5, 1, 64, 64)
    acts = model.encode(x)
    assert acts.shape == (5, 256)
    assert model.decode(acts).shape == (5, 1, 64, 64)
    assert torch.equal(model.decode(model.encode(x)), model(x))
    # the activations are pre-activations: they take negative values, the decoder starts with ReLU
    assert (acts < 0).any()
    assert isinstance(model.decoder[0], nn.ReLU)


def test_table1_layers():
    mlp = ae.build("mlp")
    linears = [m for m in mlp.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(4096, 256), (256, 256), (256, 256), (256, 4096)]
    cnn = ae.build("cnn")
    convs = [m for m in cnn.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    spec = [(isinstance(m, nn.ConvTranspose2d), m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
             m.output_padding if isinstance(m, nn.ConvTranspose2d) else None) for m in convs]
    assert spec == [
        (False, 1, 16, (3, 3), (2, 2), (1, 1), None),
        (False, 16, 32, (3, 3), (2, 2), (1, 1), None),
        (False, 32, 256, (16, 16), (1, 1), (0, 0), None),
        (True, 256, 32, (16, 16), (1, 1), (0, 0), (0, 0)),
        (True, 32, 16, (3, 3), (2, 2), (1, 1), (1, 1)),
        (True, 16, 1, (3, 3), (2, 2), (1, 1), (1, 1)),
    ]
    assert sum(isinstance(m, nn.ReLU) for m in cnn.modules()) == 5
    assert sum(isinstance(m, nn.ReLU) for m in mlp.modules()) == 3


def test_whole_input_convolutions_equal_torchs():
    """The CNN's 16×16 layers, computed as matrix products, give torch's convolutions' outputs and
    gradients from the same parameters (and the same initialisation: they are subclasses)."""
    torch.manual_seed(0)
    fast = ae.build("cnn")
    torch.manual_seed(0)
    plain = ae.build("cnn")
    plain.encoder[4], plain.decoder[1] = nn.Conv2d(32, 256, 16), nn.ConvTranspose2d(256, 32, 16)
    torch.manual_seed(0)
    assert all(torch.equal(a, b) for a, b in zip(ae.build("cnn").state_dict().values(), fast.state_dict().values()))
    plain.load_state_dict(fast.state_dict())
    x = torch.rand(6, 1, 64, 64)
    out_fast, out_plain = fast(x), plain(x)
    torch.testing.assert_close(out_fast, out_plain, rtol=1e-5, atol=1e-6)
    out_fast.pow(2).sum().backward()
    out_plain.pow(2).sum().backward()
    for (name, p), q in zip(fast.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5 * float(q.grad.abs().max()), msg=name)
    # other shapes take torch's own path
    conv, ref = ae.WholeInputConv2d(3, 4, 5), nn.Conv2d(3, 4, 5)
    ref.load_state_dict(conv.state_dict())
    y = torch.rand(2, 3, 9, 7)
    torch.testing.assert_close(conv(y), ref(y))
    tconv, tref = ae.WholeOutputConvTranspose2d(3, 4, 5), nn.ConvTranspose2d(3, 4, 5)
    tref.load_state_dict(tconv.state_dict())
    torch.testing.assert_close(tconv(torch.ones(2, 3, 1, 1)), tref(torch.ones(2, 3, 1, 1)))
    torch.testing.assert_close(tconv(y), tref(y))


def test_activations_are_batched_and_gradient_free():
    torch.manual_seed(0)
    model = ae.build("cnn").eval()
    x = torch.rand(37, 1, 64, 64)
    with torch.no_grad():
        direct = model.encode(x)
    acts = ae.activations(model, x, batch_size=8)
    assert acts.shape == (37, 256) and not acts.requires_grad
    torch.testing.assert_close(acts, direct, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ae.reconstruct(model, x, batch_size=10), model(x).detach(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"images must be a tensor of shape \(n, 1, 64, 64\)"):
        ae.activations(model, torch.rand(3, 64, 64))


def test_random_rotations_rotate_each_image():
    x = shapes.make_dataset(40, 0).images
    out = ae.random_rotations(x, torch.Generator().manual_seed(1))
    ks = []
    for a, b in zip(x, out):
        matches = [k for k in range(4) if torch.equal(rotate_images(a, k), b)]
        assert matches
        ks.append(matches[0])
    assert len(set(ks)) == 4


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_short_training_lowers_the_loss(kind):
    model, history = ae.train(ae.TrainConfig(kind, **TINY))
    assert len(history["epoch_loss"]) == 3 and len(history["heldout_mse"]) == 3
    assert len(history["step_loss"]) == 3 * 4
    assert history["epoch_loss"][-1] < history["epoch_loss"][0]
    assert history["heldout_mse"][-1] < history["heldout_mse"][0]
    assert not model.training


def test_cache_keys_name_a_gpu_and_keep_the_cpu_keys():
    """A GPU's trained weights are not the CPU's (other summation orders): off the CPU the keys of
    base models and Ms name the device type, and on the CPU they stay what they always were."""
    config = ae.TrainConfig("mlp", **{**TINY, "n_epochs": 1})
    fits = {"warm_start": FitConfig(epochs=1)}
    assert pipeline.base_model_key(config) == pipeline.base_model_key(config, "cpu") == {"config": config, "threads": 1}
    assert pipeline.base_model_key(config, "cuda") == {"config": config, "threads": 1, "device": "cuda"}
    assert pipeline.base_model_key(config, torch.device("cuda", 1))["device"] == "cuda"
    assert "device" not in pipeline.fit_key(config, fits, "warm_start")
    gpu = pipeline.fit_key(config, fits, "warm_start", "cuda")
    assert gpu["device"] == "cuda" and gpu["base_model"]["device"] == "cuda"


def test_checkpoint_round_trip_through_the_cache(tmp_cache, monkeypatch):
    config = ae.TrainConfig("mlp", **{**TINY, "n_epochs": 1})
    model, history = pipeline.base_model(config)
    assert cache.is_cached("base_model", pipeline.base_model_key(config))
    x = shapes.make_dataset(8, 9).images

    def no_training(*args, **kwargs):
        raise AssertionError("a cached model was retrained")

    monkeypatch.setattr(pipeline, "train", no_training)
    again, history2 = pipeline.base_model(config)
    assert torch.equal(again(x), model(x))
    assert history2["epoch_loss"] == history["epoch_loss"]
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    with pytest.raises(AssertionError, match="retrained"):  # a changed config does train
        pipeline.base_model(ae.TrainConfig("mlp", **{**TINY, "n_epochs": 2}))


def test_training_is_seeded(tmp_cache):
    a = ae.train(ae.TrainConfig("mlp", **{**TINY, "n_epochs": 1}))[1]
    b = ae.train(ae.TrainConfig("mlp", **{**TINY, "n_epochs": 1}))[1]
    assert a["step_loss"] == b["step_loss"]


def test_profile_contract(tiny_profile):
    """Chapter 3's parameters under a profile give the configs, the images and the cached models
    later chapters load."""
    configs = pipeline.base_model_configs(params.resolved_parameters("03_base_models", tiny_profile), "upright")
    train = ae.training_set(configs["mlp"])
    held = ae.heldout_set(configs["mlp"])
    assert len(train) == 128 and len(held) == 32
    assert torch.equal(train.images, shapes.make_dataset(128, 2, layout=train.layout, pool="train").images)
    assert not set(train.orbit_keys().tolist()) & set(held.orbit_keys().tolist())
    models = pipeline.base_models(configs, "cpu")
    assert set(models) == {"mlp", "cnn"}
    for kind, model in models.items():
        assert not model.training
        assert ae.activations(model, held.images).shape == (32, 256)
        assert cache.is_cached("base_model", pipeline.base_model_key(configs[kind]))
    assert configs["cnn"].n_epochs == 1 and configs["mlp"].seed == 2


def test_bad_config_raises_clear_errors():
    with pytest.raises(ValueError, match="kind must be one of 'mlp', 'cnn', got 'vit'"):
        ae.build("vit")
    with pytest.raises(ValueError, match="n_epochs must be an int >= 1, got 0"):
        ae.TrainConfig("mlp", n_epochs=0)
    with pytest.raises(ValueError, match=r"lr must be a number in \(0.0, 1.0\], got 0"):
        ae.TrainConfig("cnn", lr=0)
