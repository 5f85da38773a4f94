"""How long SAE Match takes at Gemma Scope's width: two JumpReLU SAEs with 16,384 features over
d_model 2304 (Gemma 2 2B), all weights, folded.

The pair is a perturbed copy (every weight with 10 % relative noise, features rescaled by up to
×10 and shuffled), so the assignment is as non-trivial as between adjacent real layers and its
answer is known; ``--independent`` matches two unrelated random SAEs instead (the hardest case
for the assignment solver). Prints the time of each stage, the blockwise build of the (F, F)
matrix handed to the solver as a ratio to one plain matrix product of the same size (how close
it is to raw BLAS speed), ``match()`` end to end as a ratio to its unavoidable parts, the peak
resident memory, and the fraction of the permutation recovered.

    python benchmarks/bench_sae_match.py [--width 16384] [--d 2304] [--threads 2] [--independent]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from esae import sae_match as sm


def random_jumprelu(d: int, width: int, seed: int) -> sm.JumpReLUSAE:
    """Random unit-scale weights, encoder = decoder transposed, thresholds in [0.1, 1.1)."""
    g = torch.Generator().manual_seed(seed)
    w_dec = torch.randn(width, d, generator=g) / d ** 0.5
    return sm.build_jumprelu(sm.JumpReLUSAE(sm.JumpReLUSAEConfig(d_in=1, d_sae=1)), W_enc=w_dec.T.contiguous(),
                             b_enc=torch.randn(width, generator=g) * 0.1, threshold=torch.rand(width, generator=g) + 0.1,
                             W_dec=w_dec, b_dec=torch.zeros(d), d_in=d, d_sae=width, apply_b_dec_to_input=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=16384)
    parser.add_argument("--d", type=int, default=2304)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--independent", action="store_true", help="match two unrelated SAEs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    a = random_jumprelu(args.d, args.width, seed=0)
    if args.independent:
        b, truth = random_jumprelu(args.d, args.width, seed=1), None
    else:
        b, truth = sm.perturbed_copy(a, noise=0.1, scale_spread=10.0, seed=1)

    times = {}
    start = time.perf_counter()
    fa, fb = sm.fold(a), sm.fold(b)
    times["fold both"] = time.perf_counter() - start
    va, vb = sm.feature_vectors(fa), sm.feature_vectors(fb)
    start = time.perf_counter()
    scores = sm._negative_inner_products(va, vb, 2048)  # what match() hands to the solver
    times["score matrix (blockwise)"] = time.perf_counter() - start
    start = time.perf_counter()
    _ = va @ vb.T
    times["reference: one matrix product"] = time.perf_counter() - start
    start = time.perf_counter()
    rows, cols = linear_sum_assignment(scores)
    times["linear_sum_assignment"] = time.perf_counter() - start
    del scores, _

    start = time.perf_counter()
    m = sm.match(a, b)  # the public function, end to end
    total = time.perf_counter() - start
    assert np.array_equal(m.permutation[rows], cols)

    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, torch threads {args.threads}")
    print(f"problem: {args.width} x {args.width} features, d = {args.d}, vectors of {va.shape[1]} numbers, "
          f"{'independent SAEs' if args.independent else 'perturbed copy'}")
    for name, seconds in times.items():
        print(f"  {name:32s} {seconds:8.2f} s")
    print(f"  {'match() end to end':32s} {total:8.2f} s")
    print(f"score-matrix build / plain matrix product: "
          f"{times['score matrix (blockwise)'] / times['reference: one matrix product']:.2f}")
    print(f"match() / (fold + plain matrix product + assignment): "
          f"{total / (times['fold both'] + times['reference: one matrix product'] + times['linear_sum_assignment']):.2f}")
    print(f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20:.2f} GiB")
    if truth is not None:
        print(f"permutation recovered: {sm.recovery(m, truth):.4f}")


if __name__ == "__main__":
    main()
