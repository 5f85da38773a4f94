"""Probe fits per second (chapter 6), per probe type and input, plus the speed-ups the chapter uses.

On synthetic TopK-like latents shaped like chapter 6's inputs (2,048 latents, K active per row,
tasks whose labels depend on a few latents), it measures in one run:

1. probe fits per second for each probe (kNN, logistic regression, XGBoost) on truncated latents
   (L = 8 and 32 columns) and on truncated reconstructions (256 columns), one worker;
2. the parallel speed-up of ``esae.probing.probe_scores`` over tasks (``n_jobs`` = every core vs 1);
3. a re-run served from the cache, as a ratio to the first run;
4. XGBoost's histogram method at 256 bins (its default, the paper profile) against 64 bins and
   against the exact method: time ratio and mean |ΔF1|, to justify what the profiles use;
5. the same XGBoost probe fitted faster: XGBoost's own API (``esae.probing.xgboost_predict``)
   against the scikit-learn wrapper, threads inside one fit against processes over tasks, and one
   multi-target fit (``multi_strategy="one_output_per_tree"``) for tasks sharing a feature matrix —
   each with the largest |ΔF1| and whether the predictions are bit-for-bit the same;
6. (``--only-f1``) the F1 scoring: ``esae.probing.f1`` (NumPy counts) against scikit-learn's
   ``f1_score`` it replaced, per call and inside ``probe_scores`` (all three probes, chapter 6's
   XGBoost settings, L = 32, one worker, best of 2 interleaved), with the scores compared.

Ratios are what to compare (the machine is shared); absolute rates are printed for reference.

    python benchmarks/bench_probing.py            # about 2–4 minutes on 2 busy cores
    python benchmarks/bench_probing.py --quick    # a smaller run
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np


def synthetic(n: int, n_latents: int, k: int, n_tasks: int, seed: int):
    """TopK-style codes ``(n, n_latents)`` and labels ``(n, n_tasks)`` that depend on a few latents."""
    rng = np.random.default_rng(seed)
    z = np.zeros((n, n_latents), np.float32)
    rows = np.repeat(np.arange(n), k)
    cols = rng.integers(0, n_latents, size=n * k)
    z[rows, cols] = rng.gamma(2.0, 0.5, size=n * k).astype(np.float32)
    task_rng = np.random.default_rng(1234)  # the same tasks for every split
    labels = []
    for _ in range(n_tasks):
        support = task_rng.integers(0, n_latents, size=3)
        score = z[:, support] @ task_rng.normal(size=3)
        labels.append(score > np.quantile(score, 0.7) + rng.normal(0, 0.05, n))
    return z, np.stack(labels, 1)


def _burn(n: int) -> float:
    s = 0
    for i in range(n):
        s += i * i
    return float(s)


def available_parallelism(workers: int) -> float:
    """How much faster ``workers`` processes finish fixed pure-Python work than one, right now:
    the ceiling for any parallel speed-up on this (possibly shared) machine. With the kernel's
    autogroup scheduling a busy machine gives each session a fixed share, whatever its process count."""
    from joblib import Parallel, delayed

    Parallel(n_jobs=workers)(delayed(_burn)(10) for _ in range(workers))
    times = {}
    for n in (1, workers):
        start = time.perf_counter()
        Parallel(n_jobs=n)(delayed(_burn)(2_000_000) for _ in range(4 * workers))
        times[n] = time.perf_counter() - start
    return times[1] / times[workers]


def rate(fn, fits: int) -> tuple[float, float]:
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    return fits / seconds, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples and tasks")
    ap.add_argument("--only-fast-xgb", action="store_true", help="run section 5 alone")
    ap.add_argument("--only-f1", action="store_true", help="run section 6 alone")
    args = ap.parse_args()
    os.environ.setdefault("ESAE_PROGRESS", "0")
    cache_dir = tempfile.mkdtemp(prefix="bench-probing-")
    os.environ["ESAE_CACHE"] = cache_dir  # a private cache: every first run really fits
    from esae import cache, probing
    from esae.probing import ProbeConfig

    n_train, n_test, tasks = (1000, 500, 8) if args.quick else (2000, 1000, 16)
    n_latents, k, d = 2048, 16, 256
    ztr, ytr = synthetic(n_train, n_latents, k, tasks, 0)
    zte, yte = synthetic(n_test, n_latents, k, tasks, 1)
    rng = np.random.default_rng(2)
    decoder = (rng.normal(size=(n_latents, d)).astype(np.float32) / 16, rng.normal(size=d).astype(np.float32))
    cores = os.cpu_count() or 1
    print(f"machine: {platform.processor() or platform.machine()}, {cores} cores visible, "
          f"load average {os.getloadavg()[0]:.1f} (shared: compare ratios, not absolute rates)")
    print(f"data: {n_train} train / {n_test} test samples, {n_latents} latents (K = {k}), {tasks} tasks\n")

    if args.only_fast_xgb:
        fast_xgboost(ztr, ytr, zte, yte, decoder, cores)
        return
    if args.only_f1:
        f1_scoring(ztr, ytr, zte, yte, decoder)
        return

    # 1. fits per second, one worker, no cache (after one warm-up fit of each probe)
    cfg = ProbeConfig()
    probing.probe_scores(ztr[:100], ytr[:100, :1], zte[:50], yte[:50, :1], L=8, config=cfg)
    print("| input | columns | probe | fits/s (1 worker) |\n|---|---|---|---|")
    fits_rates = {}
    for name, L, dec in (("latents", 8, None), ("latents", 32, None), ("reconstructions", 32, decoder)):
        cols = d if dec is not None else L
        for probe in probing.PROBES:
            r, _ = rate(lambda: probing.probe_scores(ztr, ytr, zte, yte, L=L, probes=[probe], config=cfg,
                                                     decoder=dec), tasks)
            fits_rates[(name, L, probe)] = r
            print(f"| {name} (L = {L}) | {cols} | {probe} | {r:.1f} |")

    # 2. parallel over tasks, all three probes
    seq, s1 = rate(lambda: probing.probe_scores(ztr, ytr, zte, yte, L=32, config=cfg, n_jobs=1), tasks)
    probing.probe_scores(ztr[:200], ytr[:200], zte[:100], yte[:100], L=8,
                         n_jobs=-1)  # start the worker pool outside the timing
    par, s2 = rate(lambda: probing.probe_scores(ztr, ytr, zte, yte, L=32, config=cfg, n_jobs=-1), tasks)
    same = all(np.allclose(s1.f1[p], s2.f1[p], equal_nan=True) for p in probing.PROBES)
    ceiling = available_parallelism(cores)
    autogroup = open("/proc/sys/kernel/sched_autogroup_enabled").read().strip() == "1" if os.path.exists(
        "/proc/sys/kernel/sched_autogroup_enabled") else False
    print(f"\nparallel over tasks (latents, L = 32, all probes): {par / seq:.2f}× the 1-worker rate "
          f"with {cores} workers ({seq:.2f} → {par:.2f} tasks/s); identical scores: {same}. "
          f"Pure-Python work gets {ceiling:.2f}× from {cores} workers on this machine right now "
          f"(the ceiling{'; autogroup scheduling is on' if autogroup else ''}), so the probes reach "
          f"{(par / seq) / ceiling:.0%} of the available parallelism.")

    # 3. the cache
    t0 = time.perf_counter()
    probing.probe_scores(ztr, ytr, zte, yte, L=32, config=cfg, decoder=decoder, n_jobs=-1, store=cache)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    hit = probing.probe_scores(ztr, ytr, zte, yte, L=32, config=cfg, decoder=decoder, n_jobs=-1, store=cache)
    second = time.perf_counter() - t0
    print(f"re-run from the cache (reconstructions, L = 32): {first / second:.0f}× faster "
          f"({first:.1f} s → {second:.3f} s; all cached: {all(hit.cached.values())})")

    # 4. XGBoost: histogram bins and the exact method, on the 256-column reconstructions
    def xgb(config: ProbeConfig):
        return rate(lambda: probing.probe_scores(ztr, ytr, zte, yte, L=32, probes=["xgboost"], config=config,
                                                 decoder=decoder), tasks)

    base_r, base = xgb(ProbeConfig(xgb_max_bin=256))
    print("\n| XGBoost on reconstructions (256 columns) | fits/s | speed vs hist-256 | mean abs ΔF1 vs hist-256 |")
    print("|---|---|---|---|")
    print(f"| hist, 256 bins (default; paper profile) | {base_r:.2f} | 1.00× | 0 |")
    for label, config in (("hist, 64 bins", ProbeConfig(xgb_max_bin=64)),
                          ("hist, 32 bins", ProbeConfig(xgb_max_bin=32)),
                          ("exact", ProbeConfig(xgb_tree_method="exact"))):
        r, s = xgb(config)
        delta = float(np.nanmean(np.abs(s.f1["xgboost"] - base.f1["xgboost"])))
        print(f"| {label} | {r:.2f} | {r / base_r:.2f}× | {delta:.3f} |")

    fast_xgboost(ztr, ytr, zte, yte, decoder, cores)


def fast_xgboost(ztr, ytr, zte, yte, decoder, cores: int, repeats: int = 2) -> None:
    """Section 5: the chapter's XGBoost probe (default profile: 50 trees, 32 bins) on 256-column
    truncated reconstructions (L = 32), fitted four ways; interleaved repeats, best time of each."""
    from joblib import Parallel, delayed

    from esae import probing
    from esae.probing import ProbeConfig

    cfg = ProbeConfig(xgb_estimators=50, xgb_max_bin=32)
    idx = probing.top_latents(ztr, ytr, 32)
    feats = [(probing.truncated_reconstruction(ztr, i, decoder), probing.truncated_reconstruction(zte, i, decoder))
             for i in idx]
    T = len(feats)

    def wrapper(t):  # what probing.fit_and_score does today
        model = probing.make_probe("xgboost", cfg, len(ztr))
        model.fit(feats[t][0], ytr[:, t].astype(np.int64))
        return model.predict(feats[t][1]).astype(bool)

    def native(t, threads=1):
        return probing.xgboost_predict(feats[t][0], ytr[:, t], feats[t][1], cfg, threads)

    def processes(fn):
        return Parallel(n_jobs=cores, backend="loky")(delayed(fn)(t) for t in range(T))

    processes(native), processes(wrapper)  # start the workers outside the timing
    ways = {"scikit-learn wrapper, 1 process": lambda: [wrapper(t) for t in range(T)],
            "XGBoost API, 1 process": lambda: [native(t) for t in range(T)],
            f"XGBoost API, 1 process, nthread = {cores}": lambda: [native(t, cores) for t in range(T)],
            f"scikit-learn wrapper, {cores} processes over tasks (today)": lambda: processes(wrapper),
            f"XGBoost API, {cores} processes over tasks": lambda: processes(native)}
    best: dict[str, float] = {}
    preds: dict[str, list] = {}
    for _ in range(repeats):
        for name, fn in ways.items():
            start = time.perf_counter()
            preds[name] = fn()
            best[name] = min(best.get(name, np.inf), time.perf_counter() - start)
    ref_name = "scikit-learn wrapper, 1 process"
    ref = [probing.f1(yte[:, t], preds[ref_name][t]) for t in range(T)]
    print(f"\n5. XGBoost probe (50 trees, 32 bins) on {T} tasks' truncated reconstructions (L = 32, 256 columns), "
          f"best of {repeats}; load average {os.getloadavg()[0]:.1f}")
    print("| how | fits/s | speed vs wrapper, 1 process | max abs ΔF1 | same predictions |\n|---|---|---|---|---|")
    for name in ways:
        f1s = [probing.f1(yte[:, t], preds[name][t]) for t in range(T)]
        same = all(np.array_equal(preds[name][t], preds[ref_name][t]) for t in range(T))
        print(f"| {name} | {T / best[name]:.2f} | {best[ref_name] / best[name]:.2f}× | "
              f"{max(abs(a - b) for a, b in zip(f1s, ref)):.4f} | {same} |")

    # tasks sharing one feature matrix (not chapter 6's case: its truncation gives each task its own)
    xs_tr = ztr @ decoder[0] + decoder[1]
    xs_te = zte @ decoder[0] + decoder[1]
    times = {"per task": np.inf, "multi-target": np.inf}
    for _ in range(repeats):
        start = time.perf_counter()
        each = np.stack([probing.xgboost_predict(xs_tr, ytr[:, t], xs_te, cfg) for t in range(T)], 1)
        times["per task"] = min(times["per task"], time.perf_counter() - start)
        start = time.perf_counter()
        multi = probing.xgboost_predict(xs_tr, ytr, xs_te, cfg)
        times["multi-target"] = min(times["multi-target"], time.perf_counter() - start)
    dmax = max(abs(probing.f1(yte[:, t], each[:, t]) - probing.f1(yte[:, t], multi[:, t])) for t in range(T))
    print(f"\n{T} tasks on one shared 256-column matrix: one multi-target fit (one_output_per_tree) "
          f"{times['per task'] / times['multi-target']:.2f}× the speed of {T} single fits; max abs ΔF1 {dmax:.4f}; "
          f"same predictions: {bool(np.array_equal(each, multi))}")


def f1_scoring(ztr, ytr, zte, yte, decoder, repeats: int = 2) -> None:
    """Section 6: ``esae.probing.f1`` against scikit-learn's ``f1_score``, alone and in the probe fits."""
    from sklearn.metrics import f1_score

    from esae import probing
    from esae.probing import ProbeConfig

    def sklearn_f1(y_true, y_pred) -> float:  # what probing.f1 was
        return float(f1_score(np.asarray(y_true, dtype=bool), np.asarray(y_pred, dtype=bool), zero_division=0))

    ours = probing.f1
    y, pred = ytr[:, 0], ztr[:, 0] > 0
    per_call = {}
    for name, fn in (("scikit-learn", sklearn_f1), ("numpy", ours)):
        fn(y, pred)
        start = time.perf_counter()
        for _ in range(200):
            fn(y, pred)
        per_call[name] = (time.perf_counter() - start) / 200 * 1e3
    print(f"F1 per call: scikit-learn {per_call['scikit-learn']:.3f} ms, numpy {per_call['numpy']:.4f} ms")
    cfg = ProbeConfig(xgb_estimators=50, xgb_max_bin=32)  # chapter 6's default settings
    best, scores = {}, {}
    try:
        for _ in range(repeats):
            for name, fn in (("scikit-learn", sklearn_f1), ("numpy", ours)):
                probing.f1 = fn
                for kind, dec in (("latents", None), ("reconstructions", decoder)):
                    start = time.perf_counter()
                    s = probing.probe_scores(ztr, ytr, zte, yte, L=32, config=cfg, decoder=dec, n_jobs=1)
                    key = (name, kind)
                    best[key] = min(best.get(key, float("inf")), time.perf_counter() - start)
                    scores[key] = s.f1
    finally:
        probing.f1 = ours
    for kind in ("latents", "reconstructions"):
        a, b = scores[("scikit-learn", kind)], scores[("numpy", kind)]
        same = all(np.array_equal(a[p], b[p], equal_nan=True) for p in a)
        print(f"probe_scores on {kind} (L = 32, 3 probes, {ytr.shape[1]} tasks, 1 worker): scikit-learn F1 "
              f"{best[('scikit-learn', kind)]:.2f} s, numpy F1 {best[('numpy', kind)]:.2f} s, ratio "
              f"{best[('scikit-learn', kind)] / best[('numpy', kind)]:.2f}; scores identical: {same}")


if __name__ == "__main__":
    main()
