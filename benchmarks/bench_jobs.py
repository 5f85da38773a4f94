"""Processes or threads: the book's small training steps, as one process using every core against
one single-threaded worker process per core (``esae.runtime.run_jobs``, what chapters 3 and 5 do
with ``jobs: 0``), as ratios measured in one run.

For each workload — a base model (MLP, CNN) at batch 64, chapter 5's set of 12 SAEs (regular,
wide, two-layer, invariant × K = 8, 16, 32; stacked trainer) at batch 64, 256 and 512, and chapter
7's layer SAE (JumpReLU, d = 640, 1,024 features, batch 256, sae-lens's trainer) — it times
``n`` identical jobs (``n`` = twice the number of cores) run one after another in this process with
all threads, then the same jobs run by ``esae.runtime.run_jobs`` (one worker per core, one thread
each, each worker taking the next job when it finishes one), alternating the two and keeping each
one's best repeat. The workers' start-up (spawning, importing torch and sae-lens: about 10 s on
2 cores) is included, as the chapters pay it once per call; with jobs of a few seconds it weighs
more here than in chapter 5, whose jobs take minutes. Prints seconds per job both ways, the
throughput ratio (> 1: the workers train more models per second), and the same ratio with the
start-up (timed alone, on jobs that only import) taken out. The jobs fill no cache.

Usage: ``python benchmarks/bench_jobs.py [--repeats 2] [--quick] [--only SUBSTRING]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from functools import partial

os.environ.setdefault("ESAE_PROGRESS", "0")

import esae  # noqa: E402, F401  (before torch: the runtime's OpenMP policy)
import torch  # noqa: E402

from esae import autoencoders as ae  # noqa: E402
from esae import orbits, runtime, sae_stack, sae_training  # noqa: E402


def base_model_job(kind: str, n_train: int) -> None:
    ae.train(ae.TrainConfig(kind, n_train=n_train, n_heldout=256, n_epochs=1, batch_size=64))


def sae_set_job(batch: int, n: int) -> None:
    acts, _ = orbits.synthetic_orbit(n, 256, n_atoms=2048, active=16, seed=0)
    configs = [sae_training.SAETrainConfig(name=name, k=k, n_epochs=3 if name == "invariant" else 1, batch_size=batch, lr=3e-3)
               for name in ("regular", "wide", "two_layer", "invariant") for k in (8, 16, 32)]
    sae_stack.train_stacked(configs, acts)


def layer_sae_job(steps: int) -> None:
    from esae import jumprelu

    gen = torch.Generator().manual_seed(0)
    data = torch.randn(16384, 640, generator=gen) * torch.linspace(0.2, 4.0, 640)  # chapter 7's width, uneven scales
    jumprelu.train_jumprelu(data, jumprelu.TrainConfig(d_sae=1024, target_l0=48.0, sparsity_loss="step",
                                                       l0_coefficient=0.3, steps=steps, batch_size=256, lr=0.002))


def start_up_job() -> None:
    import esae.sae_stack  # noqa: F401  (what a training job imports first)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smaller jobs")
    parser.add_argument("--only", default="", help="run the workloads whose name contains this text")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    n_jobs = 2 * cores
    scale = 4 if args.quick else 1
    workloads = {
        "MLP base model, batch 64": partial(base_model_job, "mlp", 4000 // scale),
        "CNN base model, batch 64": partial(base_model_job, "cnn", 2000 // scale),
        "12 SAEs stacked, batch 64": partial(sae_set_job, 64, 2048 // scale),
        "12 SAEs stacked, batch 256": partial(sae_set_job, 256, 4096 // scale),
        "12 SAEs stacked, batch 512": partial(sae_set_job, 512, 10000 // scale),
        "layer SAE (chapter 7), batch 256": partial(layer_sae_job, 200 // scale),
    }
    workloads = {name: job for name, job in workloads.items() if args.only.lower() in name.lower()}
    print(f"machine: {platform.platform()}, {cores} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads in this process; {n_jobs} jobs per workload\n")
    start_up = min(timed(lambda: runtime.run_jobs([start_up_job] * cores, workers=cores)) for _ in range(args.repeats))
    print(f"workers' start-up (spawn {cores} processes, import esae.sae_stack): {start_up:.1f} s per run_jobs call\n")
    print("| workload | one process, all threads (s per job) | one worker per core, 1 thread (s per job) "
          "| throughput ratio | ratio without the start-up |")
    print("| --- | --- | --- | --- | --- |")
    for name, job in workloads.items():
        job()  # warm-up (imports, allocator)
        here = workers = float("inf")
        for _ in range(args.repeats):  # alternate, keep each one's best: the machine may be shared
            here = min(here, timed(lambda: [job() for _ in range(n_jobs)]))
            workers = min(workers, timed(lambda: runtime.run_jobs([job] * n_jobs, workers=cores)))
        print(f"| {name} | {here / n_jobs:.2f} | {workers / n_jobs:.2f} | {here / workers:.2f} "
              f"| {here / max(workers - start_up, 1e-9):.2f} |", flush=True)


if __name__ == "__main__":
    main()
