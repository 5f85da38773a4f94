"""Training throughput of the base autoencoders (chapter 3), and the default profile's training time.

    python benchmarks/bench_base_models.py            # throughputs and ratios (about a minute)
    python benchmarks/bench_base_models.py --profile default   # + time the profile's full training

Throughput is samples per second of complete training steps (random-rotation augmentation,
forward, MSE, backward, Adam step) at the paper's batch size 64 and at a larger batch. The
measurements of the variants are interleaved and repeated; the best repetition (the least
disturbed by other processes) gives the ratios, the median shows how noisy the machine was.
The MLP is also timed with PyTorch's default (multi-tensor, unfused) Adam, to show what the
fused optimiser ``esae`` trains with buys, and the CNN with its two 16×16 layers as plain
``nn.Conv2d`` / ``nn.ConvTranspose2d`` (oneDNN's convolutions) instead of the matrix products
``esae`` computes them as (``autoencoders.WholeInputConv2d``, ``WholeOutputConvTranspose2d``).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import esae  # noqa: F401, I001  (before torch: the runtime's OpenMP wait policy, see benchmarks/README.md)
import torch
from torch import nn

from esae import autoencoders as ae
from esae import params, pipeline, shapes
from esae.params import check_profile


def step_timer(model: nn.Module, images: torch.Tensor, batch: int, device: torch.device, fused: bool = True):
    """A closure running ``n`` training steps and returning samples/s (``fused=False``: the
    default multi-tensor Adam instead of the fused one ``esae`` trains with)."""
    model = model.to(device).train()
    opt = ae.make_optimizer(model, 1e-3) if fused else torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    images = images.to(device)

    def run(n_steps: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for i in range(n_steps):
            lo = (i * batch) % (len(images) - batch + 1)
            x = ae.random_rotations(images[lo:lo + batch], gen)
            loss = nn.functional.mse_loss(model(x), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return n_steps * batch / (time.perf_counter() - start)

    return run


def plain_cnn() -> nn.Module:
    """The CNN with its 16×16 layers as plain torch convolutions (same parameters, same function)."""
    model = ae.build("cnn")
    model.encoder[4] = nn.Conv2d(32, ae.D_ACT, 16)
    model.decoder[1] = nn.ConvTranspose2d(ae.D_ACT, 32, 16)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--large-batch", type=int, default=512)
    parser.add_argument("--samples", type=int, default=1024, help="samples per timed repetition")
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--profile", default=None, help="also time the full training of this profile (no cache)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(f"machine: {esae.runtime.machine_description()['cpu']}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {device}")
    images = shapes.make_dataset(4096, 0).images
    variants = {}
    for batch in (64, args.large_batch):
        variants[("mlp", batch)] = step_timer(ae.build("mlp"), images, batch, device)
        variants[("cnn", batch)] = step_timer(ae.build("cnn"), images, batch, device)
        variants[("mlp unfused Adam", batch)] = step_timer(ae.build("mlp"), images, batch, device, fused=False)
        variants[("cnn plain 16x16 convs", batch)] = step_timer(plain_cnn(), images, batch, device)
    for run in variants.values():  # warm-up
        run(2)
    rates: dict[tuple[str, int], list[float]] = {key: [] for key in variants}
    for _ in range(args.repeats):
        for key, run in variants.items():
            rates[key].append(run(max(2, args.samples // key[1])))
    # the best repetition is the least disturbed by other processes; the median shows the spread
    best = {key: max(v) for key, v in rates.items()}
    print("\n| model | batch | samples/s (best) | samples/s (median) |")
    print("| --- | --- | --- | --- |")
    for (name, batch), v in rates.items():
        print(f"| {name} | {batch} | {best[(name, batch)]:.0f} | {statistics.median(v):.0f} |")
    for batch in (64, args.large_batch):
        print(f"batch {batch}: MLP fused / unfused Adam = "
              f"{best[('mlp', batch)] / best[('mlp unfused Adam', batch)]:.2f}x; MLP / CNN = "
              f"{best[('mlp', batch)] / best[('cnn', batch)]:.2f}x; CNN 16x16 layers as matmuls / plain convs = "
              f"{best[('cnn', batch)] / best[('cnn plain 16x16 convs', batch)]:.2f}x")
    for name in ("mlp", "cnn"):
        print(f"{name}: batch {args.large_batch} / batch 64 = {best[(name, args.large_batch)] / best[(name, 64)]:.2f}x")
    if args.profile:
        check_profile(args.profile)
        p03 = params.resolved_parameters("03_base_models", args.profile)
        configs = pipeline.base_model_configs(p03, pipeline.dataset_layout(p03["upstream"]["02_dataset"]))
        epochs_samples = {k: c.n_epochs * c.n_train for k, c in configs.items()}
        estimate = sum(epochs_samples[k] / best[(k, configs[k].batch_size)] for k in configs
                       if (k, configs[k].batch_size) in best)
        print(f"\n{args.profile} profile: training time estimated from the best rates {estimate:.0f} s")
        total = 0.0
        for kind, config in configs.items():
            _, history = ae.train(config, device=device)
            total += history["seconds"]
            print(f"{args.profile} {kind}: {config.n_epochs} epochs × {config.n_train} images in "
                  f"{history['seconds']:.0f} s ({history['samples_per_s']:.0f} samples/s, held-out MSE "
                  f"{history['heldout_mse'][-1]:.5f})")
        print(f"{args.profile} profile: training both models took {total:.0f} s")


if __name__ == "__main__":
    main()
