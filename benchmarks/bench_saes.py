"""Training speed of chapter 5's SAEs, as ratios measured in one run.

**Stacked vs separate** (:func:`esae.sae_stack.train_stacked`): the 12 SAEs of one base model
(regular, wide, two-layer, invariant × K = 8, 16, 32) trained together on one stream against the
same 12 trained one after another with :func:`esae.sae_training.train_sae` (today's path), at batch 64 and
1024, alternating the two and keeping each one's best repeat; samples/s counts the samples every
SAE sees (12 × steps × batch / wall time, setup included); the same ratio by the CPU time the
process spent (all threads: on a shared machine wall time also measures the share of the cores
each run got). Also: the stacked run's executed FLOPs
per second as a fraction of the machine's dense matmul rate, and the equality check — the largest
difference between a stacked and a separately trained SAE's weights (same seed, same stream),
relative to the largest weight of that tensor.

**Single SAE vs plain sae-lens** (skip with ``--no-single``): for each batch size, trains (a) sae-lens's own ``TopKTrainingSAE`` with ``SAETrainer.fit()``
— the dense TopK pass, nothing of ours — and (b) the same architecture through
``esae.sae_training.train_sae`` (the same trainer, our sparse training pass), on the same synthetic
orbit activations (d = 256, 2,048 latents), alternating the two and keeping each one's best
repeat. Also times our two-layer, invariant and wide SAEs, and the machine's dense matmul rate
(a 2048³ float32 matmul), to report the fraction of it each training run reaches:

- ``executed``: the FLOPs our step actually performs (the encoder's dense selection matmul and
  the O(K·d) sparse parts, see :func:`flops_per_sample`) per second;
- ``dense-equivalent``: the FLOPs a dense TopK step needs (12·d·F per sample for a linear encoder:
  forward 2N, backward 4N, N = 2·d·F weights) per second — above 1 means faster than any dense
  implementation running at the machine's full matmul rate could be.

**Touched rows** (``--only-touched``): the stacked run with the gradient clipping's rescaling and
the zeroing over every row, over only the rows written in the step whatever their share, and over
them only while they are fewer than a quarter of all rows (today's rule), at batch 64 and 512,
without dead latents and with most latents dead, and whether the weights agree bit for bit (they
must).

**Dead phase** (``--dead-phase mlp cnn``): the touched-rows rule once most latents are dead, on
chapter 5's own activations (the default profile's base models, from the cache), in one process:
blocks of steps alternate the rule before 2026-11-30 and today's.

Usage: ``python benchmarks/bench_saes.py [--quick] [--no-single] [--only-touched] [--dead-phase mlp cnn]
[--device cpu|cuda] [--threads N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import time
from unittest import mock

os.environ.setdefault("TQDM_DISABLE", "1")  # sae-lens's fit() draws a bar
os.environ.setdefault("ESAE_PROGRESS", "0")

import esae  # noqa: E402, F401  (before torch: the runtime's OpenMP wait policy, see benchmarks/README.md)
import torch  # noqa: E402
from sae_lens.config import SAETrainerConfig  # noqa: E402
from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig  # noqa: E402
from sae_lens.training.sae_trainer import SAETrainer  # noqa: E402

from esae import orbits, sae_stack, sae_training  # noqa: E402

D, EXPANSION, K = 256, 8, 32


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(repeats + 1):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def plain_sae_lens(acts: torch.Tensor, batch: int, steps: int, device: torch.device) -> float:
    """Samples/s of sae-lens's TopKTrainingSAE trained with SAETrainer.fit()."""
    torch.manual_seed(0)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=D, d_sae=D * EXPANSION, k=K, device=str(device)))
    batches = sae_training.orbit_batches(acts, batch, pairs=False, generator=torch.Generator().manual_seed(0))
    cfg = SAETrainerConfig(total_training_samples=steps * batch, train_batch_size_samples=batch, lr=1e-3,
                           lr_end=1e-3, device=str(device))
    trainer = SAETrainer(cfg, sae, batches)
    sync(device)
    start = time.perf_counter()
    trainer.fit()
    sync(device)
    return steps * batch / (time.perf_counter() - start)


def ours(acts: torch.Tensor, name: str, batch: int, steps: int, device: torch.device) -> float:
    epochs = max(1, -(-steps // (acts.shape[0] // batch)))
    cfg = sae_training.SAETrainConfig(name=name, k=K, n_epochs=epochs, batch_size=batch, lr=1e-3)
    return sae_training.train_sae(cfg, acts, device).history["samples_per_s"]


def flops_per_sample(name: str, device: torch.device, k: int = K) -> tuple[float, float]:
    """(executed, dense-equivalent) FLOPs of one training sample of SAE ``name`` with K = 32.

    Executed: the dense selection matmul 2·m·F (m: input width of the TopK layer, F: latents),
    the two-layer encoder's first layer (dense, forward and backward), and the sparse parts —
    decode, the value gradient (SDDMM; a dense 2·d·F matmul off the CPU), the decoder and encoder
    weight gradients and the input gradient, each 2·K·(d or m). Dense-equivalent: a dense TopK
    step, forward 2N and backward 4N for the N = (m + d)·F weights of the TopK layer and decoder."""
    K = k  # noqa: N806
    f = D * EXPANSION * (4 if name == "wide" else 1)
    first = 6 * D * 512 if name in ("two_layer", "invariant") else 0
    m = 512 if first else D
    value_grad = 2 * K * D if device.type == "cpu" else 2 * D * f
    executed = first + 2 * m * f + 2 * K * D + value_grad + 2 * K * D + 4 * K * m
    return executed, first + 6 * (m + D) * f


NAMES, KS = ("regular", "wide", "two_layer", "invariant"), (8, 16, 32)


def twelve(batch: int, epochs: int) -> list[sae_training.SAETrainConfig]:
    """The 12 SAEs chapter 5 trains per base model, at one batch size."""
    return [sae_training.SAETrainConfig(name=n, k=k, n_epochs=epochs, batch_size=batch, lr=1e-3) for n in NAMES for k in KS]


def timed(fn):
    """``fn()``, its wall time and the CPU time this process spent on it (all threads)."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - start, time.process_time() - cpu


def relative_differences(a, b) -> tuple[float, float]:
    """Over the SAEs' weight tensors: the largest ‖a − b‖ / ‖b‖ (Frobenius) and the largest
    max|a − b| / max|b|."""
    sa, sb = a.state_dict(), b.state_dict()
    frob = max(float((sa[n] - sb[n]).norm() / sb[n].norm().clamp_min(1e-12)) for n in sb)
    worst = max(float((sa[n] - sb[n]).abs().max() / sb[n].abs().max().clamp_min(1e-12)) for n in sb)
    return frob, worst


def stacked_vs_separate(acts: torch.Tensor, device: torch.device, quick: bool, repeats: int) -> None:
    peak = matmul_gflops(device)
    rows, equality = [], None
    for batch, epochs in ((64, 1), (1024, 2 if quick else 3)):
        configs = twelve(batch, epochs)
        steps = epochs * (acts.shape[0] // batch)
        best_sep = best_stack = cpu_sep = cpu_stack = float("inf")
        for _ in range(repeats):  # alternate, keep each one's best: the machine is shared and noisy
            separate, t_sep, c_sep = timed(lambda: [sae_training.train_sae(c, acts, device) for c in configs])
            stacked, t_stack, c_stack = timed(lambda: sae_stack.train_stacked(configs, acts, device))
            best_sep, best_stack = min(best_sep, t_sep), min(best_stack, t_stack)
            cpu_sep, cpu_stack = min(cpu_sep, c_sep), min(cpu_stack, c_stack)
            peak = max(peak, matmul_gflops(device))
        samples = len(configs) * steps * batch
        executed = sum(flops_per_sample(c.name, device, c.k)[0] for c in configs) * steps * batch
        rows.append((batch, steps, samples / best_sep, samples / best_stack, executed / best_stack / 1e9,
                     cpu_sep / cpu_stack))
        if batch == 64:
            equality = [(c, *relative_differences(a.sae, b.sae), a.history["mse"][-1], b.history["mse"][-1])
                        for c, a, b in zip(configs, stacked, separate)]
    print(f"dense matmul rate (2048³ float32, best in this run): {peak:.1f} GFLOP/s\n")
    print("| batch | steps | separate, 12 SAEs (samples/s) | stacked, 12 SAEs (samples/s) | stacked / separate "
          "| stacked / separate by CPU time | stacked executed FLOPs / matmul rate |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for batch, steps, sep, stack, gflops, cpu_ratio in rows:
        print(f"| {batch} | {steps} | {sep:,.0f} | {stack:,.0f} | {stack / sep:.2f} | {cpu_ratio:.2f} | {gflops / peak:.3f} |")
    print("\n(by CPU time: the ratio of the CPU seconds the process spent, all threads — on a shared machine the "
          "wall-clock ratio also measures the share of the cores each run got)")
    print("\nEquality, stacked vs separate at batch 64 (same seed and stream; per SAE the worst weight tensor's "
          "‖Δw‖ / ‖w‖ and max |Δw| / max |w|), and the last step's training MSE of each:\n")
    print("| SAE | K | ‖Δw‖ / ‖w‖ | max |Δw| / max |w| | final MSE stacked | final MSE separate |")
    print("| --- | --- | --- | --- | --- | --- |")
    for c, frob, worst, mse_a, mse_b in equality:
        print(f"| {c.name} | {c.k} | {frob:.1e} | {worst:.1e} | {mse_a:.6g} | {mse_b:.6g} |")
    print(f"\nworst after {rows[0][1]} steps: ‖Δw‖ / ‖w‖ {max(e[1] for e in equality):.1e}, "
          f"max |Δw| / max |w| {max(e[2] for e in equality):.1e}\n")


#: where the stacked trainer's clipping and zeroing go: over every row; over the rows a step wrote,
#: whatever their share (the rule before 2026-11-30); and today's rule (every row once they are a
#: quarter or more) — each a context that sets it
TOUCHED_MODES = {"every": lambda: mock.patch.object(sae_stack._RowGrad, "_touched_rows", lambda self: None),
                 "touched, any share": lambda: mock.patch.object(sae_stack, "_TOUCHED_BELOW", float("inf")),
                 "touched below the share": contextlib.nullcontext}


def touched_rows(acts: torch.Tensor, device: torch.device, quick: bool, repeats: int) -> None:
    """The 12 stacked SAEs with the gradient clipping's rescaling and the zeroing over every row,
    over the rows written in the step whatever their share (``_RowGrad``'s touched rows, as before
    2026-11-30), and over them only while they are fewer than ``_TOUCHED_BELOW`` of all rows (today),
    interleaved, best of ``repeats``; without dead latents and with most latents dead (a dead
    window of two steps: AuxK then writes most gradient rows, as in chapter 5 after its first
    epochs). The weights must agree bit for bit."""
    from dataclasses import replace

    modes = TOUCHED_MODES
    print(f"| batch | dead latents | steps | {' (s) | '.join(modes)} (s) | every / today | any share / today "
          "| weights bit for bit |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for batch, epochs in ((64, 1), (512, 1 if quick else 2)):
        for dead in ("none", "most"):
            configs = twelve(batch, epochs)
            if dead == "most":
                configs = [replace(c, dead_window=2 * batch) for c in configs]
            best, out = {}, {}
            for _ in range(repeats):
                for mode, patch in modes.items():
                    with patch():
                        out[mode], seconds, _ = timed(lambda: sae_stack.train_stacked(configs, acts, device))
                    best[mode] = min(best.get(mode, float("inf")), seconds)
            ref = out["every"]
            same = all(torch.equal(a.sae.state_dict()[n], b.sae.state_dict()[n])
                       for other in out.values() for a, b in zip(ref, other) for n in a.sae.state_dict())
            steps = epochs * (acts.shape[0] // batch)
            today = best["touched below the share"]
            print(f"| {batch} | {dead} | {steps} | {' | '.join(f'{best[m]:.2f}' for m in modes)} | "
                  f"{best['every'] / today:.2f} | {best['touched, any share'] / today:.2f} | {same} |")
    print()


def chapter5_stream(model: str) -> tuple[torch.Tensor, list[sae_training.SAETrainConfig]]:
    """Chapter 5's training orbit activations of base model ``model`` under the default profile (from
    the cache chapter 3 fills) and its 12 SAE configs."""
    from esae import cache, params, pipeline

    p05 = params.resolved_parameters("05_equivariant_sae", "default")
    upstream = p05["upstream"]
    layout = pipeline.dataset_layout(upstream["02_dataset"])
    base = pipeline.base_model_configs(upstream["03_base_models"], layout)[model]
    if not cache.is_cached("base_model", pipeline.base_model_key(base)):
        raise SystemExit(f"--dead-phase {model}: the default profile's {model} base model is not in the cache "
                         f"({cache.cache_root()}); run chapter 3 first (make book, or python -m esae.book run 03)")
    configs = list(pipeline.sae_configs(p05, layout).values())
    return pipeline.sae_context(base).acts(configs[0].canonical), configs


def dead_phase(model: str, acts: torch.Tensor, configs: list[sae_training.SAETrainConfig], batch: int, warm_epochs: int,
               blocks: int = 4, steps: int = 15) -> None:
    """Chapter 5's 12 SAEs (``configs``) of base model ``model`` on its activations ``acts``
    (:func:`chapter5_stream`), stacked at ``batch`` (batch 64: the paper's constant learning
    rate 1e-3), trained ``warm_epochs`` epochs first (timed: the first epoch, before any latent
    can count as dead, and the rest), so that most latents are dead and AuxK writes most gradient
    rows; then blocks of ``steps`` steps alternate clipping and zeroing over
    the touched rows whatever their share (as before 2026-11-30) and today's rule (over every row
    once they are a quarter or more). Both are the same arithmetic (bit for bit: the plain mode
    of ``--only-touched``); printed: ms a step per block, and the median ratio."""
    from dataclasses import replace

    schedule = dict(batch_size=batch) if batch != 64 else dict(batch_size=64, lr=1e-3, lr_decay_fraction=0.0)
    per_epoch = acts.shape[0] // batch
    epochs = warm_epochs + -(-2 * blocks * steps // per_epoch)  # the warm-up and every timed block
    group = [replace(c, n_epochs=epochs, **schedule) for c in configs]
    stacks = [sae_stack._Stack([group[i] for i in members], acts, torch.device("cpu"))
              for members in sae_stack.plan(group).stacks]
    batches = sae_training.orbit_batches(acts, batch, pairs=True, generator=torch.Generator().manual_seed(group[0].seed))

    def run(n: int) -> None:
        for _ in range(n):
            pair = next(batches)
            for st in stacks:
                st.step(pair[:, 0], pair[:, 1] if st.invariant else pair[:, 0], False)

    start = time.perf_counter()
    run(per_epoch)  # the first epoch: no latent has been silent for a dead window yet
    first = (time.perf_counter() - start) / per_epoch * 1e3
    start = time.perf_counter()
    run((warm_epochs - 1) * per_epoch)
    later = (time.perf_counter() - start) / max((warm_epochs - 1) * per_epoch, 1) * 1e3
    dead = sum(int((st.since_fired > st.cfg.dead_feature_window).sum()) for st in stacks)
    total = sum(st.n_stack * st.n_latents for st in stacks)
    times: dict[str, list[float]] = {"touched, any share": [], "touched below the share": []}
    for _ in range(blocks):
        for mode, ms in times.items():
            with TOUCHED_MODES[mode]():
                start = time.perf_counter()
                run(steps)
            ms.append((time.perf_counter() - start) / steps * 1e3)
    before, today = times.values()
    ratios = sorted(a / b for a, b in zip(before, today))
    print(f"| {model} | {batch} | {first:.0f} | {later:.0f} | {warm_epochs} | {dead / total:.0%} | "
          f"{', '.join(f'{t:.0f}' for t in before)} | {', '.join(f'{t:.0f}' for t in today)} | "
          f"{ratios[len(ratios) // 2]:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-single", action="store_true", help="only the stacked-vs-separate comparison")
    parser.add_argument("--only-touched", action="store_true",
                        help="only clipping and zeroing over the touched gradient rows vs every row")
    parser.add_argument("--dead-phase", nargs="+", choices=("mlp", "cnn"), metavar="MODEL",
                        help="only the touched-rows rule on chapter 5's activations of base model MODEL (mlp, cnn; "
                             "the default profile's, from the cache) once most latents are dead")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.dead_phase:
        print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}")
        print("| base model | batch | first epoch (ms a step) | rest of the warm-up (ms a step) | warm-up epochs "
              "| dead latents | any share (ms a step) | today (ms a step) | any share / today (median) |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for model in args.dead_phase:
            acts, configs = chapter5_stream(model)
            for batch, warm in ((64, 2), (512, 3)):
                dead_phase(model, acts, configs, batch, warm)
        return
    device = torch.device(args.device)
    repeats = 1 if args.quick else 2
    acts, _ = orbits.synthetic_orbit(8192, D, n_atoms=2048, active=16, seed=0)
    acts = acts.to(device)
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {device}")
    if args.only_touched:
        touched_rows(acts[: 2048 if args.quick else 8192], device, args.quick, max(repeats, 2))
        return
    stacked_vs_separate(acts[: 2048 if args.quick else 8192], device, args.quick, repeats)
    if args.no_single:
        return
    peak = matmul_gflops(device)
    rows = []
    for batch in (64, 1024):
        steps = (64 if args.quick else 160) if batch == 64 else (8 if args.quick else 24)
        plain = fast = 0.0
        for _ in range(repeats):  # alternate, keep each one's best: the machine is shared and noisy
            plain = max(plain, plain_sae_lens(acts, batch, steps, device))
            fast = max(fast, ours(acts, "regular", batch, steps, device))
            peak = max(peak, matmul_gflops(device))
        rows.append(("regular", batch, plain, fast))
    for name in ("two_layer", "invariant", "wide"):
        rate = max(ours(acts, name, 1024, 8 if args.quick else 16, device) for _ in range(repeats))
        rows.append((name, 1024, None, rate))
        peak = max(peak, matmul_gflops(device))
    print(f"dense matmul rate (2048³ float32, best in this run): {peak:.1f} GFLOP/s; K = {K}, 256-d inputs\n")
    print("| SAE | batch | sae-lens TopK (samples/s) | ours (samples/s) | ours / sae-lens | executed / matmul rate "
          "| dense-equivalent / matmul rate |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, batch, plain, fast in rows:
        executed, dense = flops_per_sample(name, device)
        base = f"{plain:.0f} | {fast:.0f} | {fast / plain:.2f}" if plain else f"— | {fast:.0f} | —"
        print(f"| {name} | {batch} | {base} | {fast * executed / peak / 1e9:.2f} | {fast * dense / peak / 1e9:.2f} |")


if __name__ == "__main__":
    main()
