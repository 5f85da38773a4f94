"""The matrix-product floor of a profile's book on this machine.

Counts the floating-point work of the book's dominant matrix products, from the profile's
parameters, and divides it by this machine's measured dense matmul rate: the minutes those parts
need even if every product ran at the machine's full rate. It answers "can this profile fit its
budget on this CPU without changing what it computes?" before anyone spends a cold build on it.
Counted (lower bounds: only the dense products each step cannot avoid):

- chapter 5, SAE training: every SAE's dense encoder product per step (``2·B·d·F`` for a linear
  encoder, ``2·B·(d·h + h·F)`` forward plus ``2·B·d·h`` for the first layer's weight gradient for
  the two-layer encoders of the two-layer and invariant SAEs; decoders and encoder gradients are
  sparse in the TopK latents), for every set of 12 SAEs the chapter trains: base models × seeds,
  plus the other dataset layout when ``compare_layouts``;
- chapter 7, ΔL: the vocabulary head (``2 · predictions · vocab · d`` per pass) of the clean pass
  and of every (layer pair, variant) pass;
- chapter 7, the layer SAEs: a dense JumpReLU step is ``12·B·d·F`` (two products forward, four
  backward).

Not counted: the base models and M fits (small products, overhead-bound), the XGBoost probes of
chapters 6 and 6b (not matrix products), chapter 7's transformer blocks. Measured rate: the best of
five float32 2048³ products and of five head-shaped products (4,158 × 640 by 640 × 32,768).

Usage: ``python benchmarks/bench_book_floor.py [--profile default] [--threads N]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import esae  # noqa: F401  (before torch: the runtime's OpenMP wait policy)
import torch

from esae.book import resolved_parameters

GEMMA3_270M = {"blocks": 18, "d": 640, "vocab": 262_144}  # chapter 7's default model
N_LOSS_VARIANTS = 6  # folded, unfolded, unfolded_decoder, data_based, own, layer_drop


def best_seconds(fn, repeats: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_rates() -> dict[str, float]:
    """GFLOP/s of a square float32 product and of a vocabulary-head-shaped one."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    square = 2 * 2048**3 / best_seconds(lambda: a @ b) / 1e9
    h, e = torch.randn(4158, 640), torch.randn(32_768, 640)
    head = 2 * 4158 * 640 * 32_768 / best_seconds(lambda: h @ e.T) / 1e9
    return {"square 2048³": square, "head-shaped": head}


def chapter5_flops(p03: dict, p05: dict) -> float:
    d, expansion, h = 256, p05.get("expansion", 8), p05.get("d_hidden", 512)
    F = d * expansion
    B, n = p05["batch_size"], p03["n_train"]
    steps = n // B
    one_layer = 2 * B * d * F
    two_layer = 2 * B * (d * h + h * F) + 2 * B * d * h
    per_set = 0.0
    for _ in p05["ks"]:
        per_set += steps * p05["n_epochs"] * (one_layer + 2 * B * d * 4 * F + two_layer)  # regular, wide, two-layer
        per_set += steps * p05["invariant_epochs"] * two_layer  # invariant
    sets = 2 * (p03.get("n_seeds", 1) + (1 if p05.get("compare_layouts") else 0))
    return per_set * sets


def chapter7_flops(p07: dict) -> dict[str, float]:
    m = GEMMA3_270M
    pairs = m["blocks"] - 1
    every = p07.get("loss_every_pair", None)
    stride = p07.get("loss_pair_stride", 1)
    n_every = N_LOSS_VARIANTS if every is None else len(every)
    strided_pairs = len(range(0, pairs, stride))
    passes = 1 + n_every * pairs + (N_LOSS_VARIANTS - n_every) * strided_pairs
    predictions = p07["n_loss_windows"] * (p07["context_len"] - 2)
    head = passes * 2 * predictions * m["vocab"] * m["d"]
    saes = m["blocks"] * p07["sae_steps"] * 12 * p07["sae_batch_size"] * m["d"] * p07["d_sae"]
    return {"chapter 7: ΔL vocabulary head": head, "chapter 7: layer SAEs": saes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    p = {s: resolved_parameters(s, args.profile) for s in ("03_base_models", "05_equivariant_sae", "07_sae_match")}
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    rates = matmul_rates()
    print("dense float32 matmul: " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in rates.items()))
    rate = max(rates.values()) * 1e9
    parts = {"chapter 5: SAE encoder products": chapter5_flops(p["03_base_models"], p["05_equivariant_sae"])}
    if p["07_sae_match"].get("model") == "gemma-3-270m":
        parts.update(chapter7_flops(p["07_sae_match"]))
    print(f"\nprofile {args.profile}: floor at the best measured rate ({rate / 1e9:.1f} GFLOP/s)")
    print(f"{'part':<36} {'TFLOP':>8} {'min':>7}")
    for name, flops in parts.items():
        print(f"{name:<36} {flops / 1e12:>8.1f} {flops / rate / 60:>7.1f}")
    total = sum(parts.values())
    print(f"{'total (these parts only)':<36} {total / 1e12:>8.1f} {total / rate / 60:>7.1f}")


if __name__ == "__main__":
    main()
