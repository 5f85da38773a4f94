"""The base autoencoders whose activations the book interprets (chapter 3).

Two architectures, exactly as the paper's Table 1: an MLP and a CNN that compress a
``(1, 64, 64)`` image of :mod:`esae.shapes` to 256 numbers and reconstruct it. The activations
``ψ(x)`` studied by later chapters are the **pre-activation** outputs of the last encoder layer
(:meth:`encode`); :meth:`decode` applies that layer's ReLU and then the decoder, so
``model.decode(model.encode(x)) == model(x)``.

Training follows appendix C.2: generated images, a fresh random 90° rotation of every image in
every batch, batch size 64, Adam with learning rate 1e-3, mean-squared reconstruction error
over pixels. :class:`TrainConfig` says everything that determines a trained model; the book keeps
trained weights keyed by it (:func:`esae.pipeline.base_model`), so later chapters load exactly the
models chapter 3 trained.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from esae.groups import rotate as rotate_images
from esae.checks import check_choice, check_float, check_int
from esae.runtime import progress
from esae.shapes import IMAGE_SIZE, LAYOUTS, ShapesDataset, make_dataset

Tensor = torch.Tensor

KINDS = ("mlp", "cnn")
D_ACT = 256  # width of the studied activations
VERSION = 4  # bump when training code changes what a config produces (4: the CNN's 16×16 convolutions as matmuls)


class MLPAutoencoder(nn.Module):
    """Table 1, MLP: 4096 → 256 → ReLU → 256 ‖ ReLU → 256 → ReLU → 4096 (‖ = the studied
    pre-activation). The output is linear (no squashing), as in the table."""

    def __init__(self) -> None:
        super().__init__()
        n_pix = IMAGE_SIZE * IMAGE_SIZE
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(n_pix, 256), nn.ReLU(), nn.Linear(256, D_ACT))
        self.decoder = nn.Sequential(nn.ReLU(), nn.Linear(D_ACT, 256), nn.ReLU(), nn.Linear(256, n_pix))

    def encode(self, images: Tensor) -> Tensor:
        """``(n, 1, 64, 64)`` → pre-activations ``(n, 256)``."""
        return self.encoder(images)

    def decode(self, acts: Tensor) -> Tensor:
        """Pre-activations ``(n, 256)`` → reconstructions ``(n, 1, 64, 64)``."""
        return self.decoder(acts).view(-1, 1, IMAGE_SIZE, IMAGE_SIZE)

    def forward(self, images: Tensor) -> Tensor:
        return self.decode(self.encode(images))


class WholeInputConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose kernel covers its whole unpadded input (the CNN's 16×16 kernel on a
    16×16 map), computed as the matrix product it is: the same parameters, initialisation and
    function (to float round-off), but oneDNN's convolution backward for this shape ran about
    20× slower than the product on a 2-core AVX2 CPU (``benchmarks/bench_base_models.py``).
    Other input sizes take ``nn.Conv2d``'s path."""

    def forward(self, x: Tensor) -> Tensor:
        """``(n, C, kh, kw)`` → ``(n, C', 1, 1)`` as one product; other shapes as ``nn.Conv2d``."""
        if (tuple(x.shape[-2:]) != self.kernel_size or self.padding != (0, 0) or self.dilation != (1, 1)
                or self.groups != 1 or x.ndim != 4):
            return super().forward(x)
        return nn.functional.linear(x.flatten(1), self.weight.flatten(1), self.bias)[:, :, None, None]


class WholeOutputConvTranspose2d(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` from a 1×1 map to a kernel-sized one (the CNN's 256 × 1 × 1 → 32 ×
    16 × 16), computed as one matrix product; as :class:`WholeInputConv2d`, the same parameters
    and function. Other shapes take ``nn.ConvTranspose2d``'s path."""

    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:
        """``(n, C, 1, 1)`` → ``(n, C', kh, kw)`` as one product; other shapes as ``nn.ConvTranspose2d``."""
        if (output_size is not None or x.ndim != 4 or tuple(x.shape[-2:]) != (1, 1) or self.padding != (0, 0)
                or self.output_padding != (0, 0) or self.dilation != (1, 1) or self.groups != 1):
            return super().forward(x, output_size)
        out = (x.flatten(1) @ self.weight.flatten(1)).view(x.shape[0], self.out_channels, *self.kernel_size)
        return out if self.bias is None else out + self.bias[:, None, None]


class CNNAutoencoder(nn.Module):
    """Table 1, CNN: two stride-2 3×3 convolutions (1→16→32 channels, 64→32→16 pixels) and a
    16×16 convolution to 256 channels at 1×1 ‖ ReLU, a 16×16 transposed convolution back to
    32×16×16 and two stride-2 transposed convolutions (output padding 1) to 1×64×64."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            WholeInputConv2d(32, D_ACT, 16))
        self.decoder = nn.Sequential(
            nn.ReLU(),
            WholeOutputConvTranspose2d(D_ACT, 32, 16), nn.ReLU(),
            nn.ConvTranspose2d(32, 16, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
            nn.ConvTranspose2d(16, 1, 3, stride=2, padding=1, output_padding=1))

    def encode(self, images: Tensor) -> Tensor:
        """``(n, 1, 64, 64)`` → pre-activations ``(n, 256)`` (the 1×1 map flattened)."""
        return self.encoder(images).flatten(1)

    def decode(self, acts: Tensor) -> Tensor:
        """Pre-activations ``(n, 256)`` → reconstructions ``(n, 1, 64, 64)``."""
        return self.decoder(acts.view(-1, D_ACT, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        return self.decode(self.encode(images))


_ARCHITECTURES: dict[str, type[nn.Module]] = {"mlp": MLPAutoencoder, "cnn": CNNAutoencoder}


def build(kind: str) -> nn.Module:
    """A freshly initialised autoencoder, ``kind`` in ``("mlp", "cnn")``."""
    check_choice("kind", kind, KINDS)
    return _ARCHITECTURES[kind]()


def n_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != (1, IMAGE_SIZE, IMAGE_SIZE):
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor of shape (n, 1, 64, 64), got {shape}")


@torch.no_grad()
def _batched(fn, images: Tensor, batch_size: int, device: torch.device) -> Tensor:
    check_int("batch_size", batch_size, 1)
    outs = [fn(images[i:i + batch_size].to(device, non_blocking=True)) for i in range(0, len(images), batch_size)]
    return torch.cat(outs) if outs else torch.empty(0)


def activations(model: nn.Module, images: Tensor, *, batch_size: int = 1024,
                device: torch.device | str | None = None) -> Tensor:
    """The studied activations ψ(x) = ``model.encode(images)``: ``(n, 1, 64, 64)`` → ``(n, 256)``.

    Computed without gradients in batches of ``batch_size`` on ``device`` (default: the model's
    device; the model is moved there) and returned on that device."""
    _check_images(images)
    device = _model_device(model) if device is None else torch.device(device)
    model.to(device)
    return _batched(model.encode, images, batch_size, device)


def reconstruct(model: nn.Module, images: Tensor, *, batch_size: int = 1024,
                device: torch.device | str | None = None) -> Tensor:
    """``model(images)`` in batches without gradients: ``(n, 1, 64, 64)`` → ``(n, 1, 64, 64)``
    on ``device`` (default: the model's)."""
    _check_images(images)
    device = _model_device(model) if device is None else torch.device(device)
    model.to(device)
    return _batched(model, images, batch_size, device)


def reconstruction_mse(model: nn.Module, images: Tensor, *, batch_size: int = 1024,
                       device: torch.device | str | None = None) -> float:
    """Mean squared error per pixel of ``model``'s reconstructions of ``images``."""
    recon = reconstruct(model, images, batch_size=batch_size, device=device)
    return float((recon - images.to(recon.device)).pow(2).mean())


# --------------------------------------------------------------------------------------------
# training


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a trained base model (the cache key).

    The training images are ``make_dataset(n_train, data_seed, layout=layout, pool="train")``;
    ``n_heldout`` images from :func:`heldout_set` (the ``heldout`` pool: no shared orbit, under
    ``upright`` no shared label set) give the held-out curve."""

    kind: str
    layout: str = "upright"
    n_train: int = 10_000
    n_heldout: int = 2_000
    data_seed: int = 0
    n_epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    version: int = VERSION

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, KINDS)
        check_choice("layout", self.layout, LAYOUTS)
        check_int("n_train", self.n_train, 1)
        check_int("n_heldout", self.n_heldout, 1)
        check_int("data_seed", self.data_seed, 0)
        check_int("n_epochs", self.n_epochs, 1)
        check_int("batch_size", self.batch_size, 1)
        check_float("lr", self.lr, 0.0, 1.0, lo_open=True)
        check_int("seed", self.seed, 0)


def training_set(config: TrainConfig) -> ShapesDataset:
    """The training images of ``config``: ``make_dataset(n_train, data_seed)`` of its layout, from
    the ``train`` pool of orbits."""
    return make_dataset(config.n_train, config.data_seed, layout=config.layout, pool="train")


def heldout_set(config: TrainConfig, train: ShapesDataset | None = None) -> ShapesDataset:
    """``n_heldout`` images drawn with seed ``data_seed + 1`` from the ``heldout`` pool of orbits, so
    none lies in the C4 orbit of a training image (no rotation of a held-out image was ever trained
    on; under ``upright`` no held-out label set was). ``train`` is accepted for compatibility."""
    return make_dataset(config.n_heldout, config.data_seed + 1, layout=config.layout, pool="heldout")


def random_rotations(images: Tensor, generator: torch.Generator) -> Tensor:
    """Rotate each image of ``(n, 1, H, H)`` by its own random multiple of 90° (uniform)."""
    ks = torch.randint(0, 4, (len(images),), generator=generator).to(images.device)
    out = images.clone()
    for k in (1, 2, 3):
        sel = ks == k
        if sel.any():
            out[sel] = rotate_images(images[sel], k)
    return out


def make_optimizer(model: nn.Module, lr: float) -> torch.optim.Adam:
    """Adam as C.2; the fused implementation (one kernel for all parameters, the same update up
    to float rounding) where the device supports it: about 4× faster steps on CPU."""
    fused = _model_device(model).type in ("cpu", "cuda")
    return torch.optim.Adam(model.parameters(), lr=lr, fused=fused or None)


def train(config: TrainConfig, *, device: torch.device | str = "cpu", train_set: ShapesDataset | None = None,
          heldout: ShapesDataset | None = None, eval_batch_size: int = 1024) -> tuple[nn.Module, dict[str, Any]]:
    """Train one autoencoder as appendix C.2 (kept by the book: :func:`esae.pipeline.base_model`).

    Returns the model (eval mode, on ``device``) and its history: ``step_loss`` (training MSE
    of every batch), ``epoch_loss`` (mean over each epoch), ``heldout_mse`` (after each epoch),
    ``seconds`` and ``samples_per_s``."""
    device = torch.device(device)
    train_set = training_set(config) if train_set is None else train_set
    heldout = heldout_set(config, train_set) if heldout is None else heldout
    torch.manual_seed(config.seed)
    model = build(config.kind).to(device)
    opt = make_optimizer(model, config.lr)
    gen = torch.Generator().manual_seed(config.seed)
    images = train_set.images.to(device)
    n = len(images)
    history: dict[str, Any] = {"step_loss": [], "epoch_loss": [], "heldout_mse": []}
    start = time.perf_counter()
    bar = progress(range(config.n_epochs), desc=f"training {config.kind}", unit="epoch")
    for _ in bar:
        model.train()
        order = torch.randperm(n, generator=gen).to(device)
        losses = []
        for i in range(0, n, config.batch_size):
            batch = random_rotations(images[order[i:i + config.batch_size]], gen)
            loss = nn.functional.mse_loss(model(batch), batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        losses = torch.stack(losses).cpu()
        history["step_loss"].extend(losses.tolist())
        history["epoch_loss"].append(float(losses.mean()))
        model.eval()
        history["heldout_mse"].append(reconstruction_mse(model, heldout.images, batch_size=eval_batch_size))
        bar.set_postfix(loss=f"{history['epoch_loss'][-1]:.5f}", heldout=f"{history['heldout_mse'][-1]:.5f}")
    history["seconds"] = time.perf_counter() - start
    history["samples_per_s"] = config.n_epochs * n / history["seconds"]
    print(f"{config.kind}: final training MSE {history['epoch_loss'][-1]:.5f}, held-out MSE "
          f"{history['heldout_mse'][-1]:.5f} after {config.n_epochs} epochs in {history['seconds']:.0f} s")
    return model.eval(), history


# --------------------------------------------------------------------------------------------
# a first look at the activations (chapter 3)


def _cosine(a: Tensor, b: Tensor) -> Tensor:
    return nn.functional.cosine_similarity(a, b, dim=1)


def rotation_similarity(model: nn.Module, images: Tensor, *, batch_size: int = 1024,
                        device: torch.device | str | None = None, seed: int = 0) -> dict[str, Any]:
    """How the activations ψ move when the image rotates, for ``images`` ``(n, 1, 64, 64)``.

    Returns, for the rotations ``g^p`` with p = 1, 2, 3:
    ``cosine`` ``(3, n)`` the cosine similarity of ψ(x) and ψ(g^p x); ``cosine_centred`` the same
    after subtracting the mean activation (the mean is shared by every input, so it inflates the
    raw cosine); ``r2_identity`` (3 floats) the pooled R² of ψ(x) as a prediction of ψ(g^p x),
    i.e. how much of the rotated activation the identity map M = I explains; and the baselines
    ``cosine_random`` / ``cosine_random_centred`` ``(n,)`` for ψ(x) against ψ(x') of another
    random image x' (a fixed random pairing drawn with ``seed``)."""
    from esae.metrics import r2_pooled

    acts = activations(model, images, batch_size=batch_size, device=device).cpu()
    mean = acts.mean(0, keepdim=True)
    rotated = [activations(model, rotate_images(images, p), batch_size=batch_size, device=device).cpu()
               for p in (1, 2, 3)]
    other = acts[torch.randperm(len(acts), generator=torch.Generator().manual_seed(seed))]
    return {
        "cosine": torch.stack([_cosine(acts, r) for r in rotated]),
        "cosine_centred": torch.stack([_cosine(acts - mean, r - mean) for r in rotated]),
        "r2_identity": [r2_pooled(r, acts) for r in rotated],
        "cosine_random": _cosine(acts, other),
        "cosine_random_centred": _cosine(acts - mean, other - mean),
    }


def label_r2(model: nn.Module, train: ShapesDataset, test: ShapesDataset, *, batch_size: int = 1024,
             device: torch.device | str | None = None) -> float:
    """How far ψ is an affine function of the labels: the pooled R² on ``test`` of the least-squares
    affine map from :func:`esae.shapes.one_hot` label indicators ``(n, 128)`` to ψ ``(n, 256)``,
    fitted on ``train``. It is 1 exactly when ψ is a sum of one vector per (position, shape,
    orientation) — and then rotating the image acts on ψ by a fixed linear map."""
    from esae.metrics import r2_pooled
    from esae.shapes import one_hot

    def design(ds: ShapesDataset) -> Tensor:
        x = one_hot(ds).double()
        return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)

    y_train = activations(model, train.images, batch_size=batch_size, device=device).cpu().double()
    y_test = activations(model, test.images, batch_size=batch_size, device=device).cpu().double()
    coef = torch.linalg.lstsq(design(train), y_train, driver="gelsd").solution
    return r2_pooled(y_test, design(test) @ coef)
