import pytest

from esae import params, results, runtime


def test_profiles_load_and_merge():
    for profile in params.PROFILES:
        merged = params.chapter_parameters("01_groups", profile)
        assert merged["profile"] == profile
        assert {"seed", "device"} <= set(merged)


def test_unknown_profile_names_the_choices():
    with pytest.raises(ValueError, match=r"profile must be one of 'smoke', 'default', 'paper', got 'fast'"):
        params.check_profile("fast")
    with pytest.raises(ValueError, match="profile"):
        params.chapter_parameters("01_groups", "fast")


@pytest.mark.parametrize("check,args,match", [
    (params.check_int, ("epochs", 0, 1), r"epochs must be an int >= 1, got 0"),
    (params.check_int, ("k", 3.0, 1, 8), r"k must be an int in \[1, 8\], got 3.0"),
    (params.check_int, ("k", True, 1, 8), r"k must be an int"),
    (params.check_float, ("lr", -1.0, 0.0, None), r"lr must be a number >= 0.0"),
    (params.check_choice, ("sae", "huge", ("regular", "wide")), r"sae must be one of 'regular', 'wide', got 'huge'"),
    (params.check_int_list, ("ks", [8, 0], 1), r"each entry of ks must be an int >= 1, got 0"),
    (params.check_int_list, ("ks", [], 1), r"ks must be a non-empty list"),
])
def test_checks_name_parameter_and_allowed_values(check, args, match):
    with pytest.raises(ValueError, match=match):
        check(*args)


def test_open_lower_bound():
    with pytest.raises(ValueError, match=r"lr must be a number in \(0, 1\]"):
        params.check_float("lr", 0, 0, 1, lo_open=True)
    assert params.check_float("lr", 1e-3, 0, 1, lo_open=True) == 1e-3


def test_device_resolution():
    assert runtime.resolve_device("cpu").type == "cpu"
    assert runtime.resolve_device("auto").type in {"cpu", "cuda"}
    with pytest.raises(ValueError, match="device must be one of"):
        runtime.resolve_device("tpu")


def test_seeding_is_reproducible():
    import torch

    runtime.seed_everything(3)
    a = torch.rand(3)
    runtime.seed_everything(3)
    assert torch.equal(a, torch.rand(3))
    with pytest.raises(ValueError, match="seed"):
        runtime.seed_everything(-1)


def test_results_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("ESAE_RESULTS", str(tmp_path))
    path = results.write_results("smoke", "99_test", {"a": 1.5})
    assert path == tmp_path / "smoke" / "99_test.json"
    assert results.read_results("smoke", "99_test") == {"a": 1.5}
    with pytest.raises(FileNotFoundError, match="run chapter 98_missing"):
        results.read_results("smoke", "98_missing")
    with pytest.raises(ValueError):
        results.write_results("smoke", "bad", {"x": float("nan")})
