"""How long SAE Match takes at Gemma Scope's widths: two JumpReLU SAEs with 16,384 or 65,536
features over d_model 2304 (Gemma 2 2B), all weights, folded.

Two cases per width: a **perturbed copy** (every weight with 10 % relative noise, features
rescaled by up to ×10 and shuffled: the answer is known, the assignment is easy) and two
**independent** random SAEs (unrelated: the hardest case for an assignment solver, where dense
LAPJV on 16k features takes minutes). For each, ``match(..., solver="sparse", k=k)`` (each
feature's k candidates of highest cosine similarity, both directions, found on every coordinate
or, with ``--candidates sketch``, on the part of the vectors that holds most of their squared norm
and rescored on all of it (``auto``: the sketch from ``SKETCH_MIN_WIDTH`` features on, for a
floating-point pass only); the sparse
problem solved exactly by OR-Tools' assignment, ``esae.assignment.solve_sparse``) end to end, its peak resident memory, and — where the
dense problem is affordable (16k: a 2 GiB matrix) — the dense exact solver's time and the
sparse answer's objective gap to the exact optimum. Each measurement runs in its own process,
so every peak-memory figure is that run's alone.

    python benchmarks/bench_sae_match.py [--widths 16384 65536] [--d 2304] [--threads 2] [--k 8 16]
                                         [--exact-max 16384] [--candidates auto full]

``--book`` instead compares the sparse solver with the exact one on trained SAEs: chapter 7's
layer SAEs as a book run left them in the cache (``ESAE_CACHE``), every adjacent pair, for each k
and for float32 and int8 candidates: the features matched as in the optimum and the objective gap.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import esae  # noqa: F401, I001  (before torch: the runtime's OpenMP wait policy, see benchmarks/README.md)
import torch

from sae_lens import JumpReLUSAEConfig

from esae import assignment, match_ground_truth
from esae import sae_match as sm


def random_jumprelu(d: int, width: int, seed: int) -> sm.JumpReLUSAE:
    """Random weights in Gemma Scope's units: unit decoder rows, encoder = decoder transposed,
    thresholds in [0.1, 1.1), small biases."""
    g = torch.Generator().manual_seed(seed)
    w_dec = torch.nn.functional.normalize(torch.randn(width, d, generator=g), dim=1)
    return sm.build_jumprelu(sm.JumpReLUSAE(JumpReLUSAEConfig(d_in=1, d_sae=1)), W_enc=w_dec.T.contiguous(),
                             b_enc=torch.randn(width, generator=g) * 0.1, threshold=torch.rand(width, generator=g) + 0.1,
                             W_dec=w_dec, b_dec=torch.zeros(d), d_in=d, d_sae=width, apply_b_dec_to_input=False)


def pair(case: str, d: int, width: int):
    a = random_jumprelu(d, width, seed=0)
    if case == "independent":
        return a, random_jumprelu(d, width, seed=1), None
    b, truth = match_ground_truth.perturbed_copy(a, noise=0.1, scale_spread=10.0, seed=1)
    return a, b, truth


def _cpu_seconds() -> float:
    """User + system CPU time of this process (all threads): on a shared machine the wall time
    depends on the other load, the CPU time much less."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_case(args) -> dict:
    """One measurement in this process: ``args.solver`` on ``args.one`` at ``args.width``; with
    ``args.compare`` (a saved exact optimum) also the relative objective gap to it and the share
    of the available improvement (a random permutation's cost minus the optimum's) it loses."""
    torch.set_num_threads(args.threads)
    a, b, truth = pair(args.one, args.d, args.width)
    cpu0, start = _cpu_seconds(), time.perf_counter()
    m = sm.match(a, b, solver=args.solver, k=args.k, candidates=args.candidates[0])
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu0
    out = {"seconds": seconds, "cpu_seconds": cpu, "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}
    if truth is not None:
        out["recovered"] = match_ground_truth.recovery(m, truth)
    np.save(args.out, m.permutation)
    if args.compare is not None:
        va, vb = sm.feature_vectors(a, folded=True), sm.feature_vectors(b, folded=True)
        optimum = np.load(args.compare)
        best, ours = assignment.total_cost(va, vb, optimum), assignment.total_cost(va, vb, m.permutation)
        chance = assignment.total_cost(va, vb, np.random.default_rng(0).permutation(args.width))
        out.update(gap=(ours - best) / best, lost=(ours - best) / (chance - best),
                   same=float(np.mean(optimum == m.permutation)))
    return out


def measure(width: int, case: str, solver: str, k: int, args, tmp: Path, compare: Path | None = None,
            candidates: str = "auto") -> dict:
    out = tmp / f"{width}-{case}-{solver}.npy"
    cmd = [sys.executable, __file__, "--one", case, "--solver", solver, "--width", str(width), "--d", str(args.d),
           "--threads", str(args.threads), "--k", str(k), "--out", str(out), "--candidates", candidates]
    if compare is not None:
        cmd += ["--compare", str(compare)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, (str(Path.cwd()), os.environ.get("PYTHONPATH"))))})
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def book_pairs(ks: list[int]) -> None:
    """Sparse vs exact on chapter 7's trained layer SAEs from the cache, one group per run
    configuration (a smoke and a default run leave separate groups)."""
    from esae.cache import cache_root

    groups: dict[str, dict[int, Path]] = {}
    for meta_path in sorted((cache_root() / "layer_sae").glob("*/meta.json")):
        config = json.loads(meta_path.read_text())["config"]
        name = json.dumps({k: v for k, v in config.items() if k != "layer"}, sort_keys=True)
        groups.setdefault(name, {})[config["layer"]] = meta_path.parent
    if not groups:
        print(f"no layer SAEs under {cache_root() / 'layer_sae'}: run chapter 7 first (make chapter N=07)")
        return
    dtypes = [torch.float32] + ([torch.int8] if assignment.int8_available() else [])
    for name, entries in groups.items():
        layers = sorted(entries)
        if len(layers) < 2:
            continue
        saes = [sm.JumpReLUSAE.load_from_disk(str(entries[layer])) for layer in layers]
        config = json.loads(name)
        print(f"\n{config['activations']['model']}, {len(layers)} layers, d_sae {config['train']['d_sae']}, "
              f"{config['train']['steps']} steps: {len(layers) - 1} adjacent pairs, all weights, folded")
        results: dict[tuple[int, str], list[tuple[float, float]]] = {}
        for sae_a, sae_b in zip(saes, saes[1:]):
            va, vb = sm.feature_vectors(sae_a, folded=True).float(), sm.feature_vectors(sae_b, folded=True).float()
            exact = assignment.exact_assignment(va, vb)
            for k in ks:
                for dtype in dtypes:
                    perm = assignment.sparse_assignment(va, vb, k=k, dtype=dtype)
                    results.setdefault((k, str(dtype).replace("torch.", "")), []).append(
                        (float(np.mean(perm == exact)), assignment.assignment_gap(va, vb, perm, exact)))
        print(f"{'k':>3} {'candidates':>10} | {'same: median':>12} {'min':>6} | {'gap: median':>11} {'max':>9} "
              f"| {'pairs exact':>11}")
        for (k, dtype), rows in results.items():
            same, gap = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
            print(f"{k:>3} {dtype:>10} | {np.median(same):>12.4f} {same.min():>6.4f} | {np.median(gap):>11.2e} "
                  f"{gap.max():>9.2e} | {int(np.sum(gap <= 0)):>5} of {len(rows)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[16384, 65536])
    parser.add_argument("--d", type=int, default=2304)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--k", type=int, nargs="+", default=[8, 16], help="candidates per feature for the sparse solver")
    parser.add_argument("--exact-max", type=int, default=16384, help="largest width at which to run the dense solver")
    parser.add_argument("--candidates", nargs="+", default=["auto"], choices=("auto", "sketch", "full"),
                        help="where the sparse solver finds candidates: sketch (the part of the vectors holding most "
                             "of the norm, rescored on all), full (every coordinate) or auto (sketch from 32k features "
                             "when the pass runs in floating point, never in int8: sae_match.SKETCH_MIN_WIDTH)")
    parser.add_argument("--book", action="store_true",
                        help="sparse vs exact on chapter 7's trained layer SAEs from the cache (after a book run)")
    parser.add_argument("--one", choices=("independent", "copy"), help=argparse.SUPPRESS)
    parser.add_argument("--solver", default="sparse", help=argparse.SUPPRESS)
    parser.add_argument("--width", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--compare", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        args.k = args.k[0]
        print(json.dumps(run_case(args)))
        return

    if args.book:
        torch.set_num_threads(args.threads)
        book_pairs(args.k)
        return
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, torch threads {args.threads}, load average "
          f"{os.getloadavg()[0]:.2f} at start")
    from esae.runtime import machine_description

    print(f"cpu: {machine_description()['cpu']}; candidate pass in "
          f"{str(assignment.candidate_dtype('auto', 'cpu')).replace('torch.', '')} (bfloat16 where the CPU has bf16 "
          f"units, else int8 where oneDNN's int8 kernel is exact here, else float32); sparse problem solved by OR-Tools")
    print(f"d = {args.d}, all weights, folded")
    print("seconds: wall of match() end to end (CPU seconds of all threads in brackets); peak: resident memory of the "
          "whole process; gap: relative objective gap to the exact optimum; lost: share of the improvement over a random "
          "permutation that the sparse answer gives up; same: features matched as in the optimum")
    print(f"{'width':>6} {'case':>12} {'solver':>14} | {'seconds (cpu)':>15} {'peak GiB':>8} {'recovered':>9} "
          f"{'gap':>9} {'lost':>9} {'same':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for width in args.widths:
            for case in ("independent", "copy"):
                runs = []
                exact_path = None
                if width <= args.exact_max:
                    exact = measure(width, case, "exact", 0, args, tmp)
                    runs.append(("exact", exact))
                    if "error" not in exact:
                        exact_path = tmp / f"{width}-{case}-exact.npy"
                for k in args.k:
                    for cand in args.candidates:
                        runs.append((f"sparse {k}" + ("" if cand == "auto" else f" {cand}"),
                                     measure(width, case, "sparse", k, args, tmp, compare=exact_path, candidates=cand)))
                for name, r in runs:
                    if "error" in r:
                        print(f"{width:>6} {case:>12} {name:>14} | error: {r['error']}", flush=True)
                        continue
                    rec = r.get("recovered")
                    f = lambda key, spec: format(r[key], spec) if key in r else "—"
                    print(f"{width:>6} {case:>12} {name:>14} | {r['seconds']:>7.1f} ({r['cpu_seconds']:>5.0f}) "
                          f"{r['peak_gib']:>8.2f} {'' if rec is None else f'{rec:.4f}':>9} {f('gap', '.2e'):>9} "
                          f"{f('lost', '.2e'):>9} {f('same', '.4f'):>6}", flush=True)
                if width > args.exact_max:
                    print(f"{'':>6} {'':>12} {'exact':>14} | not run (dense matrix {width ** 2 * 8 / 2 ** 30:.0f} GiB)")
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
