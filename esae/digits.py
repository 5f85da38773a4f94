"""Real images under C4: scikit-learn's handwritten digits and a small CNN classifier ("Beyond the paper").

The dataset is ``sklearn.datasets.load_digits`` (1,797 greyscale 8×8 images of the digits 0–9,
shipped with scikit-learn, no download). C4 acts exactly on the pixel grid: ``g`` rotates an image
by 90° counter-clockwise (:func:`esae.groups.rotate`), so ``g⁴ = e`` pixel for pixel.

**Samples and orientation.** A sample is ``g^p x`` for an original (upright) digit image ``x`` and
``p`` in 0..3; :class:`DigitsDataset` records the digit, ``p`` (``rotations``, the sample's
orientation) and which original it came from (``source``: its C4 orbit). The originals are split
once into pools (:data:`POOLS`: ``train`` 60 %, ``probe`` 20 %, ``heldout`` 20 %, by a seeded
permutation), so probing images never share an orbit with the images the classifier, M and the
SAEs were trained on. The orbit's canonical member is the upright original (``p = 0``), as the
generated image is for the shapes.

**Tasks** (:func:`digit_tasks`): 10 invariant tasks "is the digit d" (rotating the image keeps
the label) and 40 equivariant tasks "is the digit d at orientation o" (rotating by ``g^k`` moves
the label to orientation ``o + k``). A 6 turned twice looks like a 9 to anyone: the invariant tasks
are not all solvable from pixels, which is part of what this real dataset tests.

**Base model** (:class:`DigitClassifier`): a classifier, not an autoencoder — two 3×3
convolutions (1→16→32 channels, the second with stride 2: 8×8 → 4×4), a linear layer to
``d_hidden`` (64) units, ReLU and a linear read-out to 10 classes, trained with cross-entropy
on rotation-augmented originals (every image gets a fresh random rotation in every batch). The
studied activations are the hidden layer's pre-activations (:meth:`DigitClassifier.encode`), the
same convention as the autoencoders' ψ; :meth:`DigitClassifier.decode` is the rest of the
network, so an SAE can be spliced in and scored by the classifier's accuracy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import nn

from esae.groups import rotate as rotate_images
from esae.checks import check_choice, check_float, check_int
from esae.runtime import progress

Tensor = torch.Tensor

SIDE = 8
N_DIGITS = 10
ORDER = 4
POOLS = ("train", "probe", "heldout")
POOL_FRACTIONS = (0.6, 0.2, 0.2)
FAMILIES = ("digit", "digit_orientation")
"""The task families: invariant (digit identity, 10 tasks) and equivariant (digit × orientation, 40)."""


@lru_cache(maxsize=1)
def _originals() -> tuple[Tensor, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.from_numpy(data.images.astype(np.float32) / 16.0)[:, None]  # (1797, 1, 8, 8) in [0, 1]
    return images, data.target.astype(np.int64)


def originals() -> tuple[Tensor, np.ndarray]:
    """The 1,797 upright digit images ``(n, 1, 8, 8)`` float32 in [0, 1] and their digits ``(n,)`` int64."""
    images, digits = _originals()
    return images.clone(), digits.copy()


@dataclass
class DigitsDataset:
    """Rotated digit images with their labels: ``images`` ``(n, 1, 8, 8)``, ``digits`` ``(n,)``,
    ``rotations`` ``(n,)`` (image = ``g^p`` of its upright original) and ``source`` ``(n,)`` (index
    of the original in :func:`originals`, i.e. the C4 orbit), all int64."""

    images: Tensor
    digits: np.ndarray
    rotations: np.ndarray
    source: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.digits)
        if self.images.ndim != 4 or tuple(self.images.shape[1:]) != (1, SIDE, SIDE) or self.images.shape[0] != n:
            raise ValueError(f"images must have shape ({n}, 1, 8, 8), got {tuple(self.images.shape)}")
        for name in ("digits", "rotations", "source"):
            arr = np.asarray(getattr(self, name), dtype=np.int64)
            if arr.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
            setattr(self, name, arr)
        if ((self.rotations < 0) | (self.rotations >= ORDER)).any():
            raise ValueError(f"rotations must be in 0..{ORDER - 1}, got {int(self.rotations.min())}..{int(self.rotations.max())}")

    def __len__(self) -> int:
        return len(self.digits)

    def __getitem__(self, index) -> DigitsDataset:
        idx = np.arange(len(self))[index]
        return DigitsDataset(self.images[torch.as_tensor(np.atleast_1d(idx))], np.atleast_1d(self.digits[idx]),
                             np.atleast_1d(self.rotations[idx]), np.atleast_1d(self.source[idx]))


def pool_indices(seed: int) -> dict[str, np.ndarray]:
    """The originals of each pool (:data:`POOLS`): a permutation of 0..1796 drawn with ``seed``, cut
    60/20/20. Returns ``{pool: sorted indices}``."""
    check_int("seed", seed, 0)
    n = len(_originals()[1])
    perm = np.random.default_rng(seed).permutation(n)
    cuts = np.round(np.cumsum(POOL_FRACTIONS)[:-1] * n).astype(int)
    return {name: np.sort(part) for name, part in zip(POOLS, np.split(perm, cuts))}


def orbit_dataset(indices: Any) -> DigitsDataset:
    """Every rotation of the originals ``indices``: ``4 · len(indices)`` samples, sample ``4 i + p`` the
    original ``indices[i]`` rotated by ``g^p``."""
    idx = np.asarray(indices, dtype=np.int64)
    images, digits = _originals()
    if idx.ndim != 1 or len(idx) == 0 or idx.min() < 0 or idx.max() >= len(digits):
        raise ValueError(f"indices must be a non-empty list of originals in 0..{len(digits) - 1}, got shape {idx.shape}")
    base = images[torch.as_tensor(idx)]
    stacked = torch.stack([rotate_images(base, p) for p in range(ORDER)], 1).flatten(0, 1)
    return DigitsDataset(stacked, np.repeat(digits[idx], ORDER), np.tile(np.arange(ORDER), len(idx)),
                         np.repeat(idx, ORDER))


def pool_dataset(pool: str, seed: int) -> DigitsDataset:
    """All four rotations of the originals in ``pool`` (split with ``seed``, :func:`pool_indices`)."""
    check_choice("pool", pool, POOLS)
    return orbit_dataset(pool_indices(seed)[pool])


def rotate(dataset: DigitsDataset, k: int) -> DigitsDataset:
    """The dataset acted on by ``g^k``: images rotated by ``k`` × 90° counter-clockwise, orientations
    advanced by ``k`` (mod 4), digits and orbits unchanged."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be an int, got {k!r}")
    return DigitsDataset(rotate_images(dataset.images, int(k)), dataset.digits.copy(),
                         (dataset.rotations + int(k)) % ORDER, dataset.source.copy())


# --------------------------------------------------------------------------------------------
# probing tasks


@dataclass(frozen=True)
class DigitTask:
    """A binary task: is the image the digit ``digit`` (and, for the ``digit_orientation`` family,
    shown at orientation ``orientation``)?"""

    family: str
    digit: int
    orientation: int | None = None

    def __post_init__(self) -> None:
        check_choice("family", self.family, FAMILIES)
        check_int("digit", self.digit, 0, N_DIGITS - 1)
        if (self.family == "digit_orientation") != (self.orientation is not None):
            raise ValueError(f"orientation must be given exactly for family digit_orientation, got "
                             f"{self.orientation!r} for {self.family}")
        if self.orientation is not None:
            check_int("orientation", self.orientation, 0, ORDER - 1)

    @property
    def name(self) -> str:
        return f"digit {self.digit}" + ("" if self.orientation is None else f" at o={self.orientation}")

    @property
    def invariant(self) -> bool:
        return self.family == "digit"


def digit_tasks() -> list[DigitTask]:
    """The 50 tasks: 10 ``digit`` tasks, then 40 ``digit_orientation`` tasks (digit-major)."""
    return ([DigitTask("digit", d) for d in range(N_DIGITS)]
            + [DigitTask("digit_orientation", d, o) for d in range(N_DIGITS) for o in range(ORDER)])


def task_labels(dataset: DigitsDataset, tasks: list[DigitTask] | None = None) -> np.ndarray:
    """Binary labels ``(n, n_tasks)`` bool of ``dataset`` for ``tasks`` (default: all 50)."""
    tasks = digit_tasks() if tasks is None else list(tasks)
    out = np.empty((len(dataset), len(tasks)), dtype=bool)
    for j, t in enumerate(tasks):
        if not isinstance(t, DigitTask):
            raise ValueError(f"tasks must hold DigitTask objects, got {type(t).__name__} at index {j}")
        out[:, j] = dataset.digits == t.digit
        if t.orientation is not None:
            out[:, j] &= dataset.rotations == t.orientation
    return out


# --------------------------------------------------------------------------------------------
# the base model: a small CNN classifier


class DigitClassifier(nn.Module):
    """conv 3×3 (1→16) → ReLU → conv 3×3 stride 2 (16→32, 8×8 → 4×4) → ReLU → Linear(512, d_hidden) ‖
    ReLU → Linear(d_hidden, 10), where ‖ marks the studied pre-activations."""

    def __init__(self, d_hidden: int = 64) -> None:
        super().__init__()
        check_int("d_hidden", d_hidden, 1)
        self.d_hidden = d_hidden
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(32 * 4 * 4, d_hidden))
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(d_hidden, N_DIGITS))

    def encode(self, images: Tensor) -> Tensor:
        """``(n, 1, 8, 8)`` → hidden pre-activations ``(n, d_hidden)``."""
        return self.encoder(images)

    def decode(self, acts: Tensor) -> Tensor:
        """Hidden pre-activations ``(n, d_hidden)`` → logits ``(n, 10)``: the rest of the network."""
        return self.head(acts)

    def forward(self, images: Tensor) -> Tensor:
        return self.decode(self.encode(images))


@dataclass(frozen=True)
class ClassifierConfig:
    """How the classifier is trained: ``n_epochs`` passes over the training originals, each image
    with a fresh random rotation, Adam at ``lr``, ``batch_size`` images per step, initialised and
    shuffled from ``seed``; ``d_hidden`` studied units."""

    d_hidden: int = 64
    n_epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0

    def __post_init__(self) -> None:
        check_int("d_hidden", self.d_hidden, 1)
        check_int("n_epochs", self.n_epochs, 1)
        check_int("batch_size", self.batch_size, 1)
        check_float("lr", self.lr, 0.0, 1.0, lo_open=True)
        check_int("seed", self.seed, 0)


def train_classifier(config: ClassifierConfig, train_images: Tensor, train_digits: np.ndarray, *,
                     test: DigitsDataset | None = None, device: torch.device | str = "cpu"
                     ) -> tuple[DigitClassifier, dict[str, Any]]:
    """Train :class:`DigitClassifier` on upright originals ``train_images`` ``(n, 1, 8, 8)`` with digits
    ``(n,)``, each batch rotated at random (rotation augmentation). Returns the model (eval mode, on
    ``device``) and its history: ``epoch_loss``, ``test_accuracy`` (on ``test`` after each epoch, when
    given), ``seconds``."""
    from esae.autoencoders import random_rotations

    device = torch.device(device)
    if train_images.ndim != 4 or tuple(train_images.shape[1:]) != (1, SIDE, SIDE):
        raise ValueError(f"train_images must have shape (n, 1, 8, 8), got {tuple(train_images.shape)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = DigitClassifier(config.d_hidden).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    gen = torch.Generator().manual_seed(config.seed)
    x = train_images.to(device)
    y = torch.as_tensor(np.asarray(train_digits), dtype=torch.long, device=device)
    history: dict[str, Any] = {"epoch_loss": [], "test_accuracy": []}
    start = time.perf_counter()
    for _ in progress(range(config.n_epochs), desc="training the digit classifier", unit="epoch"):
        model.train()
        order = torch.randperm(len(x), generator=gen).to(device)
        total = 0.0
        for i in range(0, len(x), config.batch_size):
            idx = order[i:i + config.batch_size]
            loss = nn.functional.cross_entropy(model(random_rotations(x[idx], gen)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        history["epoch_loss"].append(total / len(x))
        if test is not None:
            history["test_accuracy"].append(accuracy(model.eval(), test.images, test.digits))
    history["seconds"] = time.perf_counter() - start
    return model.eval(), history


@torch.no_grad()
def accuracy(model: DigitClassifier, images: Tensor, digits: np.ndarray, batch_size: int = 2048) -> float:
    """Fraction of ``images`` ``(n, 1, 8, 8)`` whose predicted digit is ``digits`` ``(n,)``."""
    device = next(model.parameters()).device
    pred = torch.cat([model(images[i:i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(images), batch_size)])
    return float((pred.numpy() == np.asarray(digits)).mean())
