"""Warm start vs the paper's identity start for fitting M, measured in one run.

    python benchmarks/bench_fit_m.py --profile default [--target 0.98]

Fits M for both base models of the profile twice with the same config (chapter 4's): Adam from
M = I (the paper) and Adam from the least-squares solution for p = 1. Reports wall time and
epochs until held-out R² reaches the target, the final R², and the speed-up as a ratio.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import esae  # noqa: F401, I001  (before torch: the runtime's OpenMP wait policy, see benchmarks/README.md)
import torch

from esae import autoencoders, equivariance as eq, params, pipeline
from esae.runtime import resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="default", choices=params.PROFILES)
    parser.add_argument("--target", type=float, default=0.98)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    dev = resolve_device(args.device)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {dev}")
    upstream = params.resolved_parameters("04_fitting_m", args.profile)["upstream"]
    base_configs = pipeline.base_model_configs(upstream["03_base_models"], pipeline.dataset_layout(upstream["02_dataset"]))
    fit_configs = pipeline.fit_configs(params.resolved_parameters("04_fitting_m", args.profile))
    nets = pipeline.base_models(base_configs, dev)
    train_images = autoencoders.training_set(base_configs["mlp"]).images
    test_images = autoencoders.heldout_set(base_configs["mlp"]).images
    for name, net in nets.items():
        train = eq.orbit_activations(net, train_images, device=dev)
        test = eq.orbit_activations(net, test_images, device=dev)
        results = {}
        for variant in ("paper", "warm_start"):
            config = fit_configs[variant]
            start = time.perf_counter()
            fit = eq.fit_m(*train, config, eval_data=test, device=dev)
            total = time.perf_counter() - start
            reach = next((r for r in fit.history if r["r2"] >= args.target), None)
            results[variant] = (reach, fit.history[-1]["r2"], total)
            when = f"{reach['seconds']:.1f} s (epoch {reach['epoch']})" if reach else f"not within {config.epochs} epochs"
            print(f"{name:>4} {variant:>10}: R² ≥ {args.target} after {when}; final R² {fit.history[-1]['r2']:.4f}; "
                  f"total {total:.1f} s")
        (r_id, _, t_id), (r_ws, _, _) = results["paper"], results["warm_start"]
        if r_ws:
            base = r_id["seconds"] if r_id else t_id
            print(f"{name:>4} time-to-R² speed-up of the warm start: {'≥ ' if not r_id else ''}{base / max(r_ws['seconds'], 1e-9):.1f}×")


if __name__ == "__main__":
    main()
