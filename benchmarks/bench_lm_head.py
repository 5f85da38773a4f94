"""Chapter 7's vocabulary head in ΔL: float32 against the int8 head, on Gemma 3 270M.

Every ΔL pass ends in the 262,144-token head (42 GFLOP per 128-token window); on a CPU without
bfloat16 units it is most of chapter 7's time. ``esae.lm_loss.head_dtype("auto")`` picks
the **int8 head** there: oneDNN's int8 products for every logit, then every logit within
``margin`` nats (default :data:`esae.lm_loss.HEAD_MARGIN`) of its row's running best
recomputed in float32 by one sampled product, the log-sum-exp corrected with them.

On held-out windows of the chapter's corpus, from the same final hidden states, this prints per
margin: the head's seconds in float32 and in int8 (interleaved, the same batches; ratio in one
run), and the per-token loss difference against float32 (mean |·|, max, mean = bias); with
``--margins`` several margins (the speed–error trade-off behind ``HEAD_MARGIN``), and int8 alone
(no float32 recomputation) for reference. The converted model comes from the cache (a book run's,
or converted here from the PyPI package on first use).

Then one whole ΔL pass as chapter 7 runs it (33 windows: a block replaced, the later blocks rerun,
the head), with each head, interleaved: what the chapter's ΔL cell gains.

Usage: ``python benchmarks/bench_lm_head.py [--batches 4] [--margins 10 12 14] [--pass-windows 33] [--threads N]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import esae  # noqa: F401  (before torch: the runtime's OpenMP wait policy)
import torch

from esae import cache
from esae import language_models as lms
from esae import lm_loss
from esae.assignment import int8_available


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=4, help="batches of 4 windows (504 predictions each)")
    parser.add_argument("--margins", type=float, nargs="+", default=[lm_loss.HEAD_MARGIN])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--pass-windows", type=int, default=33, help="windows of the whole-pass timing (0: skip it)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not int8_available():
        raise SystemExit("oneDNN's int8 linear is not available on this machine: nothing to compare")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads, "
          f"torch {torch.__version__}, head_dtype('auto') = {lm_loss.head_dtype('auto')}")
    model, tokenizer = lms.load_model("gemma-3-270m", store=cache)
    _, held = lms.split_documents(lms.corpus_documents(), 0.1, 0)
    windows = lms.token_windows(tokenizer, held, 128)  # tokenized once: the head batches and the whole pass
    ids = windows[:4 * args.batches]
    with torch.no_grad():
        hidden = [model.model(input_ids=ids[i:i + 4]).last_hidden_state for i in range(0, len(ids), 4)]
    lm_loss._int8_head(model, 16384)  # packed once per model, as in a book run
    cap = getattr(model.config, "final_logit_softcapping", None)
    print(f"{len(hidden)} batches × {hidden[0].shape[0]} windows, {sum(h.shape[0] * (h.shape[1] - 2) for h in hidden):,} "
          f"predictions; vocabulary {model.get_output_embeddings().weight.shape[0]:,}")
    alone = []
    for margin in args.margins:
        lm_loss.HEAD_MARGIN = margin
        seconds = {"float32": 0.0, "int8": 0.0}
        diffs = []
        for b, h in enumerate(hidden):
            batch = ids[4 * b:4 * b + 4]
            start = time.perf_counter()
            ref = lm_loss._losses_from_hidden(model, h, batch, torch.float32)
            seconds["float32"] += time.perf_counter() - start
            start = time.perf_counter()
            got = lm_loss._losses_from_hidden(model, h, batch, torch.int8)
            seconds["int8"] += time.perf_counter() - start
            diffs.append((got - ref).reshape(-1))
            if margin == args.margins[0]:
                rows = h[:, 1:-1].reshape(-1, h.shape[-1]).float()
                exact = lm_loss._log_sum_exp(model.get_output_embeddings().weight, rows, 16384, cap)
                alone.append((lm_loss._int8_log_sum_exp(model, rows, 16384, cap, margin=-1e9) - exact).reshape(-1))
        d = torch.cat(diffs).double()
        print(f"margin {margin:g}: float32 {seconds['float32']:.2f} s, int8 {seconds['int8']:.2f} s, "
              f"ratio {seconds['float32'] / seconds['int8']:.2f}; loss − float32's: mean |·| {d.abs().mean():.1e}, "
              f"max {d.abs().max():.1e}, bias {d.mean():.1e}")
    a = torch.cat(alone).double()
    print(f"int8 alone (no float32 recomputation): log-sum-exp − float32's mean |·| {a.abs().mean():.2f}, "
          f"max {a.abs().max():.2f}, bias {a.mean():.2f}")
    lm_loss.HEAD_MARGIN = args.margins[0]
    if args.pass_windows:
        whole_pass(model, windows[:args.pass_windows])


def whole_pass(model, ids: torch.Tensor, block: int = 9, repeats: int = 2) -> None:
    """Seconds of one ΔL pass as chapter 7 runs it on the windows ``ids`` (block ``block`` replaced
    by its input, the later blocks rerun, then the head) with each head, interleaved, best of
    ``repeats``."""
    clean, states, as_tuple, _ = lm_loss._clean_states(model, ids, 4, torch.float32, [block - 1, block])
    best = {"float32": float("inf"), "int8": float("inf")}
    for _ in range(repeats):
        for name, dtype in (("float32", torch.float32), ("int8", torch.int8)):
            start = time.perf_counter()
            for b, s in enumerate(range(0, len(ids), 4)):
                with lm_loss._resume_after(model, block, states[b][block - 1].clone(), as_tuple), torch.no_grad():
                    hidden = model.model(input_ids=ids[s:s + 4]).last_hidden_state
                lm_loss._losses_from_hidden(model, hidden, ids[s:s + 4], dtype)
            best[name] = min(best[name], time.perf_counter() - start)
    print(f"one ΔL pass (block {block} dropped, {len(ids)} windows, best of {repeats}): float32 head {best['float32']:.2f} s, "
          f"int8 head {best['int8']:.2f} s, ratio {best['float32'] / best['int8']:.2f}")


if __name__ == "__main__":
    main()
