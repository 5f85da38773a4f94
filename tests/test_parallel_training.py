"""Training in worker processes (chapters 3, 4, 5, 6b and 7): the cache ends up as training here would leave
it, bit for bit, and bad settings or a failing job say so here."""

from functools import partial

import pytest
import torch

from esae import autoencoders as ae
from esae import cache, pipeline, runtime

TINY = dict(n_train=256, n_heldout=64, n_epochs=1, batch_size=64)


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ESAE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _states(configs):
    return [pipeline.base_model(c)[0].state_dict() for c in configs]


def test_workers_train_the_same_base_models_as_this_process(tmp_path, monkeypatch):
    configs = [ae.TrainConfig(kind, **TINY, seed=s, data_seed=s) for kind in ae.KINDS for s in (0, 1)]
    monkeypatch.setenv("ESAE_CACHE", str(tmp_path / "workers"))
    assert pipeline.prefetch_base_models(configs, jobs=2) == 4
    assert all(cache.is_cached("base_model", pipeline.base_model_key(c)) for c in configs)
    assert pipeline.prefetch_base_models(configs, jobs=2) == 0  # all cached: nothing to do
    in_workers = _states(configs)
    monkeypatch.setenv("ESAE_CACHE", str(tmp_path / "here"))
    with runtime.torch_threads(2):  # the chapter's own thread count: training still uses one
        here = _states(configs)
    assert torch.get_num_threads() >= 1
    for a, b in zip(in_workers, here):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_workers_train_the_same_saes_as_this_process(tmp_path, monkeypatch):
    base = ae.TrainConfig("mlp", **TINY)
    p05 = dict(ks=[4, 8], expansion=2, d_hidden=32, n_epochs=1, invariant_epochs=1, batch_size=64, lr=0.003,
               lr_decay_fraction=0.0, aux_coefficient=1.0, dead_window=512, seed=0)
    sets = [(base, pipeline.sae_configs(p05, base.layout)), (base, pipeline.sae_configs({**p05, "seed": 1}, base.layout))]
    fits = pipeline.fit_configs(dict(epochs=1, paper_epochs=1, constrained_epochs=1, batch_size=64, lr=0.001, penalty=1.0,
                                     seed=0))
    monkeypatch.setenv("ESAE_CACHE", str(tmp_path / "workers"))
    assert pipeline.prefetch_saes(sets, jobs=2) == 2
    assert pipeline.prefetch_saes(sets, jobs=2) == 0
    in_workers = [pipeline.saes(b, c, fits) for b, c in sets]
    monkeypatch.setenv("ESAE_CACHE", str(tmp_path / "here"))
    here = [pipeline.saes(b, c, fits) for b, c in sets]
    for a, b in zip(in_workers, here):
        for key in a:
            sa, sb = a[key].sae.state_dict(), b[key].sae.state_dict()
            assert all(torch.equal(sa[k], sb[k]) for k in sa), key


def test_nothing_runs_in_workers_for_one_job_or_on_a_gpu():
    assert runtime.job_workers(0, 1) == 0 and runtime.job_workers(1, 8) == 0
    assert runtime.job_workers(2, 8) == 2 and runtime.job_workers(8, 3) == 3
    assert runtime.job_workers(0, 8, "cuda") == 0


@pytest.mark.parametrize("jobs", [-1, 1.5, "2"])
def test_bad_jobs_are_refused_by_name(jobs):
    with pytest.raises(ValueError, match="jobs must be 0"):
        runtime.job_workers(jobs, 4)


def _fails():
    raise RuntimeError("job 7 broke")


def test_a_failing_job_raises_here():
    with pytest.raises(RuntimeError, match="job 7 broke"):
        runtime.run_jobs([_fails, _fails], workers=2)


def test_torch_threads_restores_the_count():
    before = torch.get_num_threads()
    with runtime.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="positive int"):
        with runtime.torch_threads(0):
            pass


# ----------------------------------------------------------------------------- chapter 6b's seeds

def _tiny_seeds():
    from esae import beyond

    calls = []
    for s in (0, 1):
        train = ae.TrainConfig("mlp", layout="upright", n_train=64, n_heldout=32, data_seed=s, n_epochs=1, batch_size=32,
                               seed=s)
        config = beyond.ComparisonConfig(ks=(4,), expansion=2, d_hidden=32, sae_epochs=1, invariant_epochs=1,
                                         batch_size=32, m_epochs=1, lengths=(2,), xgb_estimators=5, seed=s)
        calls.append(partial(pipeline.beyond_shapes_seed, train, config, jitter=1.0, task_indices=[0, 5],
                             n_probe_train=40, n_probe_test=30))
    return calls


def _numbers(run: dict) -> dict:
    return {k: v for k, v in run.items() if k != "seconds"}  # wall times differ between any two runs


def test_workers_compute_the_same_beyond_seeds_as_this_process(tmp_path, monkeypatch):
    calls = _tiny_seeds()
    monkeypatch.setenv("ESAE_CACHE", str(tmp_path / "workers"))
    assert pipeline.prefetch_beyond_seeds(calls, jobs=2) == 2
    assert pipeline.prefetch_beyond_seeds(calls, jobs=2) == 0  # all cached: nothing to do
    in_workers = [call() for call in calls]  # read back from the cache
    monkeypatch.setenv("ESAE_CACHE", str(tmp_path / "here"))
    assert pipeline.prefetch_beyond_seeds(calls, jobs=1) == 0  # one worker: the seeds are computed when asked for
    with runtime.torch_threads(2):  # the chapter's own thread count: the seed still runs on one
        here = [call() for call in calls]
    assert [_numbers(r) for r in in_workers] == [_numbers(r) for r in here]


def test_prefetch_beyond_seeds_refuses_other_calls():
    with pytest.raises(ValueError, match="each of calls must be a functools.partial of esae.pipeline.beyond_shapes_seed"):
        pipeline.prefetch_beyond_seeds([partial(pipeline.base_model, ae.TrainConfig("mlp", **TINY))], jobs=2)


# ----------------------------------------------------------------------------- chapter 7's layer SAEs

def test_workers_train_the_same_layer_saes_as_this_process(tmp_path, monkeypatch):
    from esae import language_models as lms
    from esae import jumprelu

    gen = torch.Generator().manual_seed(0)
    train = (torch.randn(3, 512, 16, generator=gen) * torch.linspace(0.5, 3.0, 16)).to(torch.bfloat16)
    acts = lms.Activations(train=train, eval=torch.zeros(3, 8, 16), eval_ids=torch.zeros(1, 9, dtype=torch.long),
                           loss_ids=torch.zeros(0, 9, dtype=torch.long))
    cfg = lms.ActivationsConfig(model="tiny-random", context_len=9, n_train_tokens=512, n_eval_tokens=8)
    train_cfg = jumprelu.TrainConfig(d_sae=32, target_l0=4.0, steps=20, batch_size=64, seed=0)
    monkeypatch.setenv("ESAE_CACHE", str(tmp_path / "workers"))
    assert pipeline.prefetch_layer_saes(cfg, train_cfg, [0, 1, 2], acts, jobs=2) == 3
    assert pipeline.prefetch_layer_saes(cfg, train_cfg, [0, 1, 2], acts, jobs=2) == 0  # all cached
    in_workers = [pipeline.layer_sae(cfg, train_cfg, t, acts).state_dict() for t in range(3)]
    monkeypatch.setenv("ESAE_CACHE", str(tmp_path / "here"))
    assert pipeline.prefetch_layer_saes(cfg, train_cfg, [0, 1, 2], acts, jobs=1) == 0  # one worker: trained when asked for
    here = [pipeline.layer_sae(cfg, train_cfg, t, acts).state_dict() for t in range(3)]
    for a, b in zip(in_workers, here):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(in_workers[0]["W_enc"], in_workers[1]["W_enc"])  # each layer its own data and seed


# ----------------------------------------------------------------------------- chapter 4's fits of M

def test_workers_fit_the_same_ms_as_this_process(tmp_path, monkeypatch):
    base = ae.TrainConfig("mlp", **TINY)
    fits = pipeline.fit_configs(dict(epochs=2, paper_epochs=2, constrained_epochs=2, batch_size=64, lr=0.001,
                                     penalty=1.0, seed=0))
    wanted = [(base, fits, v) for v in ("paper", "exact", "penalty")]  # exact brings the warm start it starts from
    monkeypatch.setenv("ESAE_CACHE", str(tmp_path / "workers"))
    pipeline.base_model(base)  # chapter 3's model, in both caches alike
    assert pipeline.prefetch_fits(wanted, jobs=2) == 4
    assert pipeline.prefetch_fits(wanted, jobs=2) == 0  # all cached: nothing to do
    in_workers = {v: pipeline.fit(base, fits, v).m for v in ("paper", "warm_start", "exact", "penalty")}
    monkeypatch.setenv("ESAE_CACHE", str(tmp_path / "here"))
    pipeline.base_model(base)
    with runtime.torch_threads(2):  # the chapter's own thread count: the fits still use one
        here = {v: pipeline.fit(base, fits, v).m for v in in_workers}
    assert all(torch.equal(in_workers[v], here[v]) for v in here)
