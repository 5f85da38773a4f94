"""A busy machine: how much the package's trainers slow down beside one competing busy process,
before and after the CPU thread policy of :mod:`esae.runtime`, as ratios measured in one run.

    python benchmarks/bench_busy.py [--repeats 2] [--competitor-threads 2] [--scale 8]
                                    [--modes before passive after spin=N ...]

The workload (run in a fresh Python process each time, so OpenMP reads its environment anew) is
the three kinds of small steps the chapters spend their time on, at smoke-like sizes (``--scale``
multiplies the data: more of the same steps), timed
separately: training a base model (MLP 2 epochs + CNN 1 epoch on 256 images, batch 64), fitting M
with the constraints (penalty and exact, float64 parts; 1 epoch over 1024 synthetic orbits, batch 64) and
training SAEs at batch 64 (three stacked regular SAEs and one separately trained, 16 steps).

- ``before``: ``ESAE_CPU_POLICY=off`` and no ``OMP_WAIT_POLICY`` — libgomp's default wait
  policy, as the package behaved before;
- ``passive``: ``GOMP_SPINCOUNT=0`` (threads sleep at once: the package's policy before the bounded spin);
- ``after``: the package's default (``GOMP_SPINCOUNT=1000`` and ``OMP_WAIT_POLICY=PASSIVE``, set
  by :mod:`esae.runtime` before torch loads);
- ``spin=N``: ``GOMP_SPINCOUNT=N``.

Besides the slowdowns, the script prints each mode's total seconds idle and busy against the first
mode's: a policy that only makes the idle run slower also shows a smaller slowdown.

Each mode is timed idle and beside a competitor (a ``--competitor-threads``-thread float32
matmul loop in its own process, with the default OpenMP policy, like any other busy program),
as interleaved pairs: idle, busy, idle, busy, ... The slowdown of a pair is busy / idle. The
machine may be shared with other work: the script prints the load average at every measurement
and the spread of the ratios over the repeats, not just their median.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMPETITOR = ("import torch, time\ntorch.set_num_threads({threads})\na = torch.randn(768, 768)\n"
              "while True:\n    a = torch.tanh(a @ a)\n")


def workload(scale: int = 1) -> dict[str, float]:
    """Time the three small-step trainers, their data ``scale`` times the smoke-like sizes (the
    steps keep their batch sizes, so a larger scale runs more of the same steps); return seconds
    per part."""
    os.environ.setdefault("ESAE_PROGRESS", "0")
    import esae  # noqa: F401  (first: the runtime's thread policy, unless switched off)
    import torch
    from esae import autoencoders, equivariance, orbits, sae_stack, sae_training

    out: dict[str, float] = {}
    configs = [autoencoders.TrainConfig(kind="mlp", n_train=256 * scale, n_heldout=64, n_epochs=2),
               autoencoders.TrainConfig(kind="cnn", n_train=256 * scale, n_heldout=64, n_epochs=1)]
    data = [(autoencoders.training_set(c), None) for c in configs]
    data = [(train, autoencoders.heldout_set(c, train)) for c, (train, _) in zip(configs, data)]
    start = time.perf_counter()
    for c, (train, heldout) in zip(configs, data):
        autoencoders.train(c, train_set=train, heldout=heldout)
    out["base models"] = time.perf_counter() - start

    acts, _ = orbits.synthetic_orbit(1024 * scale, 256, n_atoms=512, active=8, seed=0)
    x, rotated = acts[:, 0], acts[:, 1:].transpose(0, 1).contiguous()
    start = time.perf_counter()
    for constraint in ("penalty", "exact"):
        equivariance.fit_m(x, rotated, equivariance.FitConfig(epochs=1, batch_size=64, constraint=constraint,
                                                              schedule="cosine"))
    out["M fits"] = time.perf_counter() - start

    sae_configs = [sae_training.SAETrainConfig(name="regular", k=k, n_epochs=1, batch_size=64) for k in (8, 16, 32)]
    small = acts[:1024 * scale]
    start = time.perf_counter()
    sae_stack.train_stacked(sae_configs, small)
    sae_training.train_sae(sae_configs[0], small)
    out["SAEs"] = time.perf_counter() - start
    out["total"] = sum(out.values())
    out["torch_threads"] = torch.get_num_threads()
    return out


def run_workload(mode: str, scale: int = 1) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if mode == "before":
        env["ESAE_CPU_POLICY"] = "off"
    else:
        env.pop("ESAE_CPU_POLICY", None)
    if mode.startswith("spin="):  # a bounded spin: libgomp's GOMP_SPINCOUNT overrides the wait policy's
        env["GOMP_SPINCOUNT"] = mode.split("=", 1)[1]
    elif mode == "passive":  # sleep at once (what the package did before the bounded spin)
        env["GOMP_SPINCOUNT"] = "0"
    done = subprocess.run([sys.executable, __file__, "--workload", "--scale", str(scale)], env=env, capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def start_competitor(threads: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "ESAE_CPU_POLICY")}
    proc = subprocess.Popen([sys.executable, "-c", COMPETITOR.format(threads=threads)], env=env)
    time.sleep(2.0)  # let it reach its loop
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--competitor-threads", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=["before", "passive", "after"],
                        help="before: libgomp's default; passive: GOMP_SPINCOUNT=0 (sleep at once); after: the "
                             "package's default (esae.runtime); spin=N: GOMP_SPINCOUNT=N")
    parser.add_argument("--scale", type=int, default=1, help="data sizes × this (1: smoke-like, seconds; 8: "
                                                                   "closer to the default profile's run lengths)")
    parser.add_argument("--workload", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.workload:
        print(json.dumps(workload(args.scale)))
        return
    print(f"machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}; competitor: a "
          f"{args.competitor_threads}-thread matmul loop; {args.repeats} interleaved repeats\n")
    parts = ("base models", "M fits", "SAEs", "total")
    ratios: dict[str, dict[str, list[float]]] = {m: {p: [] for p in parts} for m in args.modes}
    idle_s: dict[str, list[float]] = {m: [] for m in args.modes}
    busy_s: dict[str, list[float]] = {m: [] for m in args.modes}
    print("| repeat | mode | load (1 min) idle / busy | " + " | ".join(f"{p} idle → busy (s)" for p in parts) + " |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in parts) + " |")
    for rep in range(args.repeats):
        for mode in args.modes:
            load_idle = os.getloadavg()[0]
            idle = run_workload(mode, args.scale)
            competitor = start_competitor(args.competitor_threads)
            try:
                load_busy = os.getloadavg()[0]
                busy = run_workload(mode, args.scale)
            finally:
                competitor.kill()
                competitor.wait()
            for p in parts:
                ratios[mode][p].append(busy[p] / idle[p])
            idle_s[mode].append(idle["total"])
            busy_s[mode].append(busy["total"])
            cells = " | ".join(f"{idle[p]:.1f} → {busy[p]:.1f} ({busy[p] / idle[p]:.2f}×)" for p in parts)
            print(f"| {rep + 1} | {mode} | {load_idle:.1f} / {load_busy:.1f} | {cells} |", flush=True)
    print("\nSlowdown beside the competitor (busy / idle), median [min – max] over the repeats:\n")
    print("| mode | " + " | ".join(parts) + " |")
    print("| --- | " + " | ".join("---" for _ in parts) + " |")
    for mode in args.modes:
        cells = " | ".join(f"{statistics.median(r):.2f}× [{min(r):.2f} – {max(r):.2f}]" for r in ratios[mode].values())
        print(f"| {mode} | {cells} |")
    first = args.modes[0]
    print(f"\nTotal seconds, median over the repeats (and against {first}: the absolute cost of each policy):\n")
    print("| mode | idle (s) | busy (s) | idle / idle of " + first + " | busy / busy of " + first + " |")
    print("| --- | --- | --- | --- | --- |")
    for mode in args.modes:
        i, b = statistics.median(idle_s[mode]), statistics.median(busy_s[mode])
        print(f"| {mode} | {i:.1f} | {b:.1f} | {i / statistics.median(idle_s[first]):.2f} | "
              f"{b / statistics.median(busy_s[first]):.2f} |")


if __name__ == "__main__":
    main()
