import subprocess
import sys

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


def test_gpu_numerics_ask_cudnn_for_full_float32_and_deterministic_convolutions():
    """What resolving a CUDA device sets (in a fresh process: the flags are global): cuDNN's
    float32 convolutions without TF32, its deterministic algorithms, no autotuning."""
    code = ("import torch; from esae import runtime; runtime.cuda_numerics(); c = torch.backends.cudnn; "
            "print(c.conv.fp32_precision if hasattr(c, 'conv') else c.allow_tf32 is False, c.deterministic, c.benchmark)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() in (["ieee", "True", "False"], ["True", "True", "False"])


def test_matmul_dtype_follows_the_hardware(monkeypatch):
    import torch

    assert runtime.matmul_dtype("float32", "cpu") is torch.float32
    assert runtime.matmul_dtype("bfloat16", "cpu") is torch.bfloat16
    assert runtime.matmul_dtype("auto", "cuda") is torch.bfloat16  # a GPU always has bf16 products
    for native, expected in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(runtime, "_cpu_has_bf16", lambda native=native: native)
        assert runtime.matmul_dtype("auto", "cpu") is expected
    with pytest.raises(ValueError, match=r"loss_head_dtype must be one of auto, float32, bfloat16, got 'half'"):
        runtime.matmul_dtype("half", "cpu", name="loss_head_dtype")


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


def test_every_rule_names_a_parameter_its_chapter_declares():
    """A renamed parameter must take its rule along (a rule for a name no chapter declares checks nothing)."""
    stems = params.chapter_stems()
    declared = {stem: params.declared_parameters(stem) for stem in stems}
    for stem, rules in params.RULES.items():
        for name, rule in rules.items():
            owners = stems if stem == "common" else [stem]
            assert all(name in declared[s] for s in owners), f"RULES[{stem!r}][{name!r}] names no declared parameter"
            if rule.among:
                other_stem, _, other = rule.among.rpartition(".")
                assert other in declared[other_stem or stem], f"{stem}.{name} refers to {rule.among}"


def test_declared_parameters_read_the_parameters_cell():
    d = params.declared_parameters("05_equivariant_sae")
    assert list(d)[:3] == ["profile", "seed", "device"]
    assert d["ks"].type == "list" and d["ks"].default == [8, 16, 32] and "TopK" in d["ks"].help
    assert d["lr"].type == "float"


def test_yaml_reads_exponents_as_numbers_and_keeps_strings(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("a: 1e-3\nb: 2E+2\nc: '1e-3'\nd: 1.5e-4\ne: 12\nf: e5\ng: 1_000\n")
    assert params.read_yaml(path) == {"a": 0.001, "b": 200.0, "c": "1e-3", "d": 1.5e-4, "e": 12, "f": "e5", "g": 1000}


def test_missing_or_unknown_section_names_file_and_section(tmp_path, monkeypatch):
    monkeypatch.setenv("ESAE_PARAMS", str(tmp_path))
    (tmp_path / "smoke.yaml").write_text("common: {seed: 0}\n01_groups: {n_samples: 200}\n")
    assert params.chapter_parameters("01_groups", "smoke")["n_samples"] == 200
    with pytest.raises(params.ProfileError, match=r"smoke.yaml has no section 04_fitting_m: add it"):
        params.chapter_parameters("04_fitting_m", "smoke")
    (tmp_path / "smoke.yaml").write_text("common: {seed: 0}\n01_group: {n_samples: 200}\n")
    with pytest.raises(params.ProfileError, match=r"smoke.yaml: unknown section '01_group' \(did you mean 01_groups\?\)"):
        params.chapter_parameters("01_groups", "smoke")
    (tmp_path / "smoke.yaml").write_text("- just\n- a list\n")
    with pytest.raises(params.ProfileError, match=r"smoke.yaml must hold a mapping of sections"):
        params.load_profile("smoke")


def test_results_are_rounded_to_ten_significant_digits(tmp_path, monkeypatch):
    monkeypatch.setenv("ESAE_RESULTS", str(tmp_path))
    results.write_results("smoke", "99_test", {"x": 1.0035239470286674, "y": [2.7e-13, 3], "z": True})
    assert results.read_results("smoke", "99_test") == {"x": 1.003523947, "y": [2.7e-13, 3], "z": True}
    assert results.rounded({"a": 2.7e-13, "b": 0.5}, zero_below=1e-8) == {"a": 0.0, "b": 0.5}
