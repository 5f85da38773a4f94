"""Cyclic groups and their action on images by 90° rotations (chapter 1).

The group used throughout the book is C4 = {e, g, g², g³}: ``g`` rotates an image by 90°
counter-clockwise (the convention of ``numpy.rot90`` and ``torch.rot90`` on the last two
axes, with row 0 at the top). Elements are represented by their exponent ``p`` in ``g^p``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from esae.checks import check_int

Tensor = torch.Tensor


@dataclass(frozen=True)
class CyclicGroup:
    """The cyclic group C_n; element ``p`` stands for ``g^p`` with ``0 <= p < n``."""

    order: int

    def __post_init__(self) -> None:
        check_int("order", self.order, 1)

    @property
    def identity(self) -> int:
        return 0

    @property
    def elements(self) -> tuple[int, ...]:
        return tuple(range(self.order))

    def _check(self, a: int) -> int:
        return check_int("group element", a, 0, self.order - 1)

    def compose(self, a: int, b: int) -> int:
        """``g^a * g^b = g^(a+b mod n)``."""
        return (self._check(a) + self._check(b)) % self.order

    def inverse(self, a: int) -> int:
        """``(g^a)^-1 = g^(-a mod n)``."""
        return (-self._check(a)) % self.order

    def power(self, a: int, p: int) -> int:
        """``(g^a)^p`` for any integer ``p`` (negative powers are powers of the inverse)."""
        return (self._check(a) * p) % self.order

    def act(self, a: int, images: Tensor) -> Tensor:
        """The action of ``g^a`` on images ``(..., H, W)`` with ``H == W``: rotation by
        ``a * 360/n`` degrees counter-clockwise. Defined for n in {1, 2, 4}, the orders
        whose rotations map the pixel grid onto itself."""
        if 4 % self.order != 0:
            raise ValueError(f"order must be 1, 2 or 4 to act on pixel grids by rotation, got {self.order}")
        return rotate(images, self._check(a) * (4 // self.order))

    def orbit(self, images: Tensor) -> Tensor:
        """All transforms of ``images``: ``(n, ...)`` with entry ``p`` equal to ``g^p · images``."""
        return torch.stack([self.act(a, images) for a in self.elements])

    def regular_representation(self) -> Tensor:
        """The n×n permutation matrices ``R[p]`` with ``R[p] e_q = e_(p+q)``: ``(n, n, n)``."""
        eye = torch.eye(self.order)
        return torch.stack([eye.roll(p, dims=0) for p in self.elements])


C4 = CyclicGroup(4)


def rotate(images: Tensor, k: int) -> Tensor:
    """Rotate square images ``(..., H, H)`` by ``k`` × 90° counter-clockwise (any integer ``k``)."""
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim < 2 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"images must have shape (..., H, H) with square last two axes, got {tuple(images.shape)}")
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValueError(f"k must be an int, got {k!r}")
    return torch.rot90(images, k % 4, dims=(-2, -1))


def rotation_permutation(size: int, k: int = 1) -> Tensor:
    """The permutation matrix ``P`` ``(size², size²)`` with ``P @ x.flatten() ==
    rotate(x, k).flatten()`` for every ``(size, size)`` image ``x``: the action of ``g^k``
    as a linear representation on pixel space."""
    check_int("size", size, 1)
    index = rotate(torch.arange(size * size).reshape(size, size), k).flatten()
    return torch.eye(size * size)[index]


def _relative(diff: Tensor, ref: Tensor) -> float:
    denom = ref.pow(2).sum()
    return float(diff.pow(2).sum() / denom) if denom > 0 else float(diff.pow(2).sum())


def invariance_error(f: Callable[[Tensor], Tensor], images: Tensor, group: CyclicGroup = C4) -> float:
    """Relative invariance error ``Σ_p ‖f(g^p x) − f(x)‖² / Σ_p ‖f(x)‖²`` over a batch:
    0 for an invariant ``f``. Falls back to the absolute error where ``f(x) == 0``."""
    ref = f(images)
    diffs = torch.stack([f(group.act(a, images)) - ref for a in group.elements])
    return _relative(diffs, ref.expand_as(diffs))


def equivariance_error(f: Callable[[Tensor], Tensor], images: Tensor, group: CyclicGroup = C4,
                       act_out: Callable[[int, Tensor], Tensor] | None = None) -> float:
    """Relative equivariance error ``Σ_p ‖f(g^p x) − g^p·f(x)‖² / Σ_p ‖f(g^p x)‖²``: 0 for
    an equivariant ``f``. ``act_out(p, y)`` is the action on outputs (default: rotation)."""
    act_out = act_out or group.act
    ref = f(images)
    lhs = torch.stack([f(group.act(a, images)) for a in group.elements])
    rhs = torch.stack([act_out(a, ref) for a in group.elements])
    return _relative(lhs - rhs, lhs)


def power_error(matrix: Tensor, order: int = 4, basis: Tensor | None = None) -> float:
    """``‖M^order − I‖_F / ‖I‖_F``: how far a matrix is from representing an element of a
    cyclic group of that order (0 for an exact representation). With ``basis`` (orthonormal
    rows ``(r, d)``, e.g. the span the activations occupy) only vectors of that subspace are
    checked: ``‖(M^order − I) Bᵀ‖_F / ‖Bᵀ‖_F``."""
    check_int("order", order, 1)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"matrix must be square (d, d), got {tuple(matrix.shape)}")
    eye = torch.eye(matrix.shape[0], dtype=matrix.dtype, device=matrix.device)
    err = torch.linalg.matrix_power(matrix, order).sub(eye)
    if basis is None:
        return float(err.norm() / eye.norm())
    if basis.ndim != 2 or basis.shape[1] != matrix.shape[0]:
        raise ValueError(f"basis must be (r, {matrix.shape[0]}) with orthonormal rows, got {tuple(basis.shape)}")
    b = basis.to(matrix).T  # M's dtype and device
    return float((err @ b).norm() / b.norm())


def glyph_image(text: str = "F", size: int = 64, thickness: int | None = None) -> Tensor:
    """A ``(size, size)`` float image in [0, 1] of ``text`` drawn with OpenCV (anti-aliased),
    centred: a small chiral picture for showing the action of C4 before the dataset exists."""
    import cv2
    import numpy as np

    check_int("size", size, 8)
    thickness = thickness or max(1, size // 16)
    scale = size / 28
    canvas = np.zeros((size, size), np.uint8)
    (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    origin = ((size - w) // 2, (size + h) // 2)
    cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thickness, cv2.LINE_AA)
    return torch.from_numpy(canvas).float() / 255.0


SYMBOLS = ("+", "-")


def symbol_image(symbol: str = "+", size: int = 64, thickness: int | None = None) -> Tensor:
    """A ``(size, size)`` binary image of a plus sign or a horizontal bar, centred on the pixel
    grid so that its symmetry is exact pixel for pixel: ``"+"`` is fixed by every quarter turn,
    ``"-"`` by the half turn only. (Text glyphs such as :func:`glyph_image`'s are not: font
    rendering places strokes off the grid's centre.)"""
    if symbol not in SYMBOLS:
        raise ValueError(f"symbol must be one of {SYMBOLS}, got {symbol!r}")
    check_int("size", size, 8)
    half = (thickness or max(2, size // 16)) // 2 or 1
    lo, hi = size // 2 - half, size - (size // 2 - half)  # rows lo..hi-1: symmetric about the centre
    margin = size // 5
    img = torch.zeros(size, size)
    img[lo:hi, margin:size - margin] = 1.0
    if symbol == "+":
        img[margin:size - margin, lo:hi] = 1.0
    return img
