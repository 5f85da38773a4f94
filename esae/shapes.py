"""The rotated-shapes dataset and its 180 binary probing tasks (chapter 2).

An image is 64×64 pixels, one channel, values in [0, 1]. Each of its four 32×32 quadrants holds
one of eight shapes (:data:`SHAPES`) in one of its distinct orientations under 90° rotations
(:data:`NUM_ORIENTATIONS`: 2 for the rectangle and the diagonal line, 4 for the others).

**Positions.** Quadrants are numbered counter-clockwise starting at the top right, like the
quadrants of the plane (I, II, III, IV):

===== ============= ===================
pos   quadrant      pixels (rows, cols)
===== ============= ===================
0     top-right     ``[0:32, 32:64]``
1     top-left      ``[0:32, 0:32]``
2     bottom-left   ``[32:64, 0:32]``
3     bottom-right  ``[32:64, 32:64]``
===== ============= ===================

**The C4 action.** ``g`` rotates an image by 90° counter-clockwise (``esae.groups.rotate``,
``torch.rot90`` on the last two axes). With the numbering above, ``g^k`` moves the shape at
position ``p`` to position ``(p + k) mod 4`` and advances its orientation to
``(o + k) mod NUM_ORIENTATIONS[shape]``. Orientation ``o`` of a shape is drawn as ``rot90`` of
its one canonical sprite ``o`` times (the two-orientation sprites are exactly symmetric under a
half turn), so ``rotate(render(s, o), k) == render(*rotate_labels(s, o, k))`` pixel for pixel.

**Layouts** (how a sample is drawn, :data:`LAYOUTS`):

- ``upright`` — the paper's reading (section 4, Figure 6): a *generated* image holds one shape per
  quadrant in its base orientation (orientation 0), and orientations arise only from rotating the
  whole image by ``g^p``. A sample is ``g^p x`` with ``x`` generated and ``p`` uniform in 0..3;
  ``ShapesDataset.rotations`` records ``p``, so the canonical member of every orbit is the
  generated image itself (:meth:`ShapesDataset.canonical`). There are 8⁴ = 4,096 label sets.
- ``independent`` — every quadrant draws its own orientation (this book's first reading): the
  generated image has no distinguished member in its orbit and ``rotations`` is ``None``.

**Pools.** Every C4 orbit belongs to one of the pools :data:`POOLS` (``train`` 70 %, ``probe``
15 %, ``heldout`` 15 %, by a fixed hash of its orbit key), so sets drawn from different pools
never share an orbit — under ``upright`` never share a label set.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from esae.groups import rotate as rotate_images
from esae.checks import check_choice, check_int

Tensor = torch.Tensor

IMAGE_SIZE = 64
CELL = 32  # side of a quadrant
NUM_POSITIONS = 4

SHAPES: tuple[str, ...] = ("rectangle", "diagonal", "triangle", "half_disk", "L", "T", "arrow", "arc")
"""The eight shape names; a shape id is an index into this tuple."""

NUM_ORIENTATIONS: tuple[int, ...] = (2, 2, 4, 4, 4, 4, 4, 4)
"""Distinct orientations of each shape under 90° rotations (2 for the half-turn-symmetric ones)."""

POSITION_NAMES: tuple[str, ...] = ("top-right", "top-left", "bottom-left", "bottom-right")
QUADRANT_ORIGINS: tuple[tuple[int, int], ...] = ((0, CELL), (0, 0), (CELL, 0), (CELL, CELL))
"""(row, column) of the top-left pixel of the quadrant at each position."""
_POSITION_SLICES = tuple((slice(r, r + CELL), slice(c, c + CELL)) for r, c in QUADRANT_ORIGINS)

_SHIFT = 4  # OpenCV fractional bits: coordinates are drawn with 1/16-pixel precision
_C = (CELL - 1) / 2  # the cell's centre (pixel centres sit at integer coordinates)


def _pts(points: list[tuple[float, float]]) -> np.ndarray:
    return np.round(np.asarray(points) * (1 << _SHIFT)).astype(np.int32).reshape(-1, 1, 2)


def _poly(canvas: np.ndarray, points: list[tuple[float, float]]) -> None:
    import cv2

    cv2.fillPoly(canvas, [_pts(points)], 255, cv2.LINE_AA, _SHIFT)


def _rect(canvas: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> None:
    _poly(canvas, [(x0, y0), (x1, y0), (x1, y1), (x0, y1)])


def _draw_canonical(shape: int, scale: float = 1.0) -> np.ndarray:
    """The canonical (orientation 0) sprite of ``shape``: ``(32, 32)`` uint8, anti-aliased, drawn at
    ``scale`` (1.0: the book's sprites; smaller values shrink it about the cell's centre).

    Coordinates are in pixels with pixel centres at integers, so the cell's centre is 15.5;
    at scale 1 every shape keeps a margin of about 3 pixels so neighbouring quadrants never touch."""
    import cv2

    c = _C

    def P(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
        # scale 1 keeps the coordinates untouched, so the unjittered sprites stay byte-identical
        return points if scale == 1.0 else [(c + scale * (x - c), c + scale * (y - c)) for x, y in points]

    def ellipse(canvas: np.ndarray, centre: tuple[float, float], radius: float, start: int, end: int,
                thickness: int) -> None:
        if scale != 1.0:
            centre, radius = P([centre])[0], radius * scale
            thickness = thickness if thickness < 0 else max(1, int(round(thickness * scale)))
        cv2.ellipse(canvas, (int(round(centre[0] * 16)), int(round(centre[1] * 16))),
                    (int(round(radius * 16)), int(round(radius * 16))), 0, start, end, 255, thickness,
                    cv2.LINE_AA, _SHIFT)

    canvas = np.zeros((CELL, CELL), np.uint8)
    name = SHAPES[shape]
    if name == "rectangle":  # wide horizontal bar
        _poly(canvas, P([(c - 12, c - 5), (c + 12, c - 5), (c + 12, c + 5), (c - 12, c + 5)]))
    elif name == "diagonal":  # thick stroke from bottom-left to top-right
        half = 2.2  # half width of the stroke, perpendicular to it
        d = half / np.sqrt(2)
        a, b = (c - 11.5, c + 11.5), (c + 11.5, c - 11.5)
        _poly(canvas, P([(a[0] - d, a[1] - d), (b[0] - d, b[1] - d), (b[0] + d, b[1] + d), (a[0] + d, a[1] + d)]))
    elif name == "triangle":  # filled isosceles triangle, apex up
        _poly(canvas, P([(c, c - 12), (c + 12, c + 11), (c - 12, c + 11)]))
    elif name == "half_disk":  # filled half disk, flat side down
        ellipse(canvas, (c, c + 6), 12, 180, 360, -1)
    elif name == "L":  # upright bar with a foot to the right
        _poly(canvas, P([(c - 10, c - 12), (c - 4, c - 12), (c - 4, c + 6), (c + 10, c + 6),
                         (c + 10, c + 12), (c - 10, c + 12)]))
    elif name == "T":  # top bar with a stem down the middle
        _poly(canvas, P([(c - 12, c - 12), (c + 12, c - 12), (c + 12, c - 6), (c + 3, c - 6),
                         (c + 3, c + 12), (c - 3, c + 12), (c - 3, c - 6), (c - 12, c - 6)]))
    elif name == "arrow":  # pointing up: triangular head on a thin shaft
        _poly(canvas, P([(c, c - 12), (c + 9, c - 2), (c + 2, c - 2), (c + 2, c + 12),
                         (c - 2, c + 12), (c - 2, c - 2), (c - 9, c - 2)]))
    elif name == "arc":  # a ring open to the right, like a "C"
        ellipse(canvas, (c, c), 10, 50, 310, 4)
    else:  # pragma: no cover - SHAPES and this function are edited together
        raise AssertionError(name)
    if NUM_ORIENTATIONS[shape] == 2:
        # anti-aliasing rounds a hair differently on opposite edges; make the half-turn symmetry
        # exact so that orientation is well defined mod 2
        canvas = np.maximum(canvas, np.rot90(canvas, 2))
    return canvas


@lru_cache(maxsize=1)
def _bank() -> Tensor:
    """Every sprite: ``(8, 4, 32, 32)`` float32 in [0, 1], entry ``[s, o]`` = canonical sprite of
    ``s`` rotated ``o`` times by 90° counter-clockwise (for two-orientation shapes ``[s, o]`` and
    ``[s, o + 2]`` coincide)."""
    canon = torch.stack([torch.from_numpy(_draw_canonical(s).astype(np.float32) / 255.0)
                         for s in range(len(SHAPES))])
    return torch.stack([rotate_images(canon, k) for k in range(4)], dim=1).contiguous()


def sprites() -> Tensor:
    """A copy of the sprite bank ``(8, 4, 32, 32)``: shape ``s`` in orientation ``o`` at ``[s, o]``
    (``o`` taken mod ``NUM_ORIENTATIONS[s]``)."""
    return _bank().clone()


# --------------------------------------------------------------------------------------------
# jitter: sprites at random scales and offsets (chapter "Beyond the paper")

SCALE_LEVELS: tuple[float, ...] = tuple(float(v) for v in np.round(np.linspace(0.55, 1.0, 10), 4))
"""The scales a jittered sprite may be drawn at (fractions of the book's sprite size): 0.55 to 1.0 in ten
steps. A scale is stored as its index into this tuple; the last one (1.0) is the unjittered sprite."""
_MARGIN = 1  # empty pixels every shifted sprite keeps to its quadrant's edge, so quadrants never touch


@lru_cache(maxsize=1)
def _scaled_bank() -> Tensor:
    """Every sprite at every scale: ``(10, 8, 4, 32, 32)`` float32, entry ``[l, s, o]`` = the canonical
    sprite of ``s`` drawn at ``SCALE_LEVELS[l]`` (centred) and rotated ``o`` times; level 9 is
    :func:`_bank`."""
    out = []
    for level, scale in enumerate(SCALE_LEVELS):
        if scale == 1.0:
            out.append(_bank())
            continue
        canon = torch.stack([torch.from_numpy(_draw_canonical(s, scale).astype(np.float32) / 255.0)
                             for s in range(len(SHAPES))])
        out.append(torch.stack([rotate_images(canon, k) for k in range(4)], dim=1))
    return torch.stack(out).contiguous()


@lru_cache(maxsize=1)
def max_offsets() -> tuple[int, ...]:
    """For each scale level, the largest shift (pixels, along rows and along columns) that keeps every
    sprite of that scale, in every orientation, at least one pixel inside its quadrant."""
    bank = _scaled_bank()
    out = []
    for level in range(len(SCALE_LEVELS)):
        ink = bank[level].flatten(0, 1).amax(0) > 0  # (32, 32): pixels any sprite of this scale touches
        rows = torch.nonzero(ink.any(1)).flatten()
        cols = torch.nonzero(ink.any(0)).flatten()
        room = min(int(rows.min()), CELL - 1 - int(rows.max()), int(cols.min()), CELL - 1 - int(cols.max()))
        out.append(max(0, room - _MARGIN))
    return tuple(out)


def sample_jitter(n: int, rng: np.random.Generator, jitter: float) -> tuple[np.ndarray, np.ndarray]:
    """Random scales and offsets for ``n`` images of four sprites each: ``scales`` ``(n, 4)`` int64
    indices into :data:`SCALE_LEVELS`, uniform over the levels whose scale is at least
    ``1 − 0.45 · jitter``; ``offsets`` ``(n, 4, 2)`` int64 pixel shifts ``(rows, columns)``, each uniform in
    ``−⌊jitter · m⌋ .. ⌊jitter · m⌋`` with ``m`` the scale's :func:`max_offsets`. ``jitter`` in [0, 1];
    0 gives scale 1.0 and no shift (the book's images)."""
    from esae.checks import check_float

    check_float("jitter", jitter, 0.0, 1.0)
    lowest = 1.0 - 0.45 * jitter
    levels = np.array([i for i, v in enumerate(SCALE_LEVELS) if v >= lowest - 1e-9], dtype=np.int64)
    scales = levels[rng.integers(0, len(levels), size=(n, NUM_POSITIONS))]
    reach = np.floor(jitter * np.asarray(max_offsets())[scales] + 1e-9).astype(np.int64)  # (n, 4)
    offsets = np.floor(rng.random((n, NUM_POSITIONS, 2)) * (2 * reach[..., None] + 1)).astype(np.int64) - reach[..., None]
    return scales, offsets


def check_jitter_labels(n: int, scales, offsets) -> tuple[np.ndarray, np.ndarray]:
    """Validate jitter labels of ``n`` images: ``scales`` ``(n, 4)`` ints in 0..9 and ``offsets``
    ``(n, 4, 2)`` ints within each scale's :func:`max_offsets`. Returns int64 arrays."""
    sc = np.asarray(scales)
    off = np.asarray(offsets)
    if sc.shape != (n, NUM_POSITIONS) or not np.issubdtype(sc.dtype, np.integer):
        raise ValueError(f"scales must be an integer array of shape ({n}, 4), got {sc.dtype} {sc.shape}")
    if ((sc < 0) | (sc >= len(SCALE_LEVELS))).any():
        raise ValueError(f"scales must be indices in 0..{len(SCALE_LEVELS) - 1}, got {int(sc.min())}..{int(sc.max())}")
    if off.shape != (n, NUM_POSITIONS, 2) or not np.issubdtype(off.dtype, np.integer):
        raise ValueError(f"offsets must be an integer array of shape ({n}, 4, 2), got {off.dtype} {off.shape}")
    reach = np.asarray(max_offsets())[sc]
    if (np.abs(off) > reach[..., None]).any():
        raise ValueError("offsets must stay within max_offsets() of each sprite's scale (the sprite would leave "
                         f"its quadrant), got up to {int(np.abs(off).max())} pixels")
    return sc.astype(np.int64), off.astype(np.int64)


def rotate_jitter(scales, offsets, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The jitter labels of the image rotated by ``k`` × 90° counter-clockwise: the sprite at position
    ``p`` moves to ``(p + k) mod 4`` keeping its scale, and its shift ``(rows, columns)`` turns with the
    image, ``(dr, dc) → (−dc, dr)`` per quarter turn."""
    sc, off = np.asarray(scales), np.asarray(offsets)
    k = int(k) % 4
    for _ in range(k):
        off = np.stack([-off[..., 1], off[..., 0]], -1)
    return np.roll(sc, k, axis=1), np.roll(off, k, axis=1)


# --------------------------------------------------------------------------------------------
# labels


def _as_labels(name: str, values, upper: np.ndarray | int) -> np.ndarray:
    arr = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
    if arr.ndim != 2 or arr.shape[1] != NUM_POSITIONS or arr.shape[0] < 1:
        raise ValueError(f"{name} must be an integer array of shape (n, 4) with n >= 1, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    bad = (arr < 0) | (arr >= upper)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        hi = upper if np.isscalar(upper) else upper[i, j]
        raise ValueError(f"{name}[{i}, {j}] must be in 0..{int(hi) - 1}, got {int(arr[i, j])}")
    return arr.astype(np.int64)


def check_labels(shapes, orientations) -> tuple[np.ndarray, np.ndarray]:
    """Validate label arrays ``(n, 4)``: shape ids in ``0..7`` and each orientation below its
    shape's number of orientations. Returns them as int64 NumPy arrays."""
    s = _as_labels("shapes", shapes, len(SHAPES))
    o_arr = orientations.detach().cpu().numpy() if isinstance(orientations, Tensor) else np.asarray(orientations)
    if o_arr.shape != s.shape:
        raise ValueError(f"orientations must have the same shape as shapes {s.shape}, got {o_arr.shape}")
    o = _as_labels("orientations", o_arr, np.asarray(NUM_ORIENTATIONS)[s])
    return s, o


def rotate_labels(shapes, orientations, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The labels of the image rotated by ``k`` × 90° counter-clockwise: the shape at position
    ``p`` moves to ``(p + k) mod 4`` and its orientation becomes ``(o + k) mod NUM_ORIENTATIONS``."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be an int, got {k!r}")
    s, o = check_labels(shapes, orientations)
    k = int(k) % 4
    counts = np.asarray(NUM_ORIENTATIONS)[s]
    new_o = (o + k) % counts
    return np.roll(s, k, axis=1), np.roll(new_o, k, axis=1)


def render(shapes, orientations, scales=None, offsets=None) -> Tensor:
    """Draw images from labels: ``shapes``, ``orientations`` integer arrays ``(n, 4)`` (column =
    position) → float32 images ``(n, 1, 64, 64)`` in [0, 1]. With jitter labels (``scales`` ``(n, 4)``
    indices into :data:`SCALE_LEVELS`, ``offsets`` ``(n, 4, 2)`` pixel shifts, see :func:`sample_jitter`)
    each sprite is drawn at its scale and shifted inside its quadrant."""
    s, o = check_labels(shapes, orientations)
    if (scales is None) != (offsets is None):
        raise ValueError("scales and offsets must be given together (jitter labels) or both be None")
    images = torch.zeros(len(s), 1, IMAGE_SIZE, IMAGE_SIZE)
    if scales is None:
        cells = _bank()[torch.from_numpy(s), torch.from_numpy(o)]  # (n, 4, 32, 32)
    else:
        sc, off = check_jitter_labels(len(s), scales, offsets)
        cells = _scaled_bank()[torch.from_numpy(sc), torch.from_numpy(s), torch.from_numpy(o)]
        # shift each cell by its offset: out[r, c] = cell[r - dr, c - dc] (margins keep ink off the wrap)
        grid = torch.arange(CELL)
        rows = (grid[None, None, :] - torch.from_numpy(off[..., 0])[..., None]) % CELL  # (n, 4, 32)
        cols = (grid[None, None, :] - torch.from_numpy(off[..., 1])[..., None]) % CELL
        n_idx = torch.arange(len(s))[:, None, None, None]
        p_idx = torch.arange(NUM_POSITIONS)[None, :, None, None]
        cells = cells[n_idx, p_idx, rows[..., :, None], cols[..., None, :]]
    for p, (r, c) in enumerate(_POSITION_SLICES):
        images[:, 0, r, c] = cells[:, p]
    return images


# --------------------------------------------------------------------------------------------
# datasets


@dataclass
class ShapesDataset:
    """Images ``(n, 1, 64, 64)`` float32 in [0, 1] with their labels: ``shapes`` and
    ``orientations`` int64 arrays ``(n, 4)``, column ``p`` describing the quadrant at position ``p``."""

    images: Tensor
    shapes: np.ndarray
    orientations: np.ndarray
    rotations: np.ndarray | None = None
    """``(n,)`` int64: under the ``upright`` layout, the rotation ``p`` with image = ``g^p`` (generated
    image); ``None`` under ``independent`` (no generated member is distinguished)."""
    scales: np.ndarray | None = None
    """``(n, 4)`` int64 indices into :data:`SCALE_LEVELS` of a jittered dataset; ``None`` without jitter."""
    offsets: np.ndarray | None = None
    """``(n, 4, 2)`` int64 pixel shifts ``(rows, columns)`` of a jittered dataset; ``None`` without jitter."""

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or tuple(self.images.shape[1:]) != (1, IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"images must have shape (n, 1, 64, 64), got {tuple(self.images.shape)}")
        if self.images.shape[0] != len(self.shapes):
            raise ValueError(f"images ({self.images.shape[0]}) and labels ({len(self.shapes)}) differ in length")
        if self.rotations is not None:
            self.rotations = np.asarray(self.rotations, dtype=np.int64)
            if self.rotations.shape != (len(self.shapes),) or ((self.rotations < 0) | (self.rotations > 3)).any():
                raise ValueError(f"rotations must be ({len(self.shapes)},) ints in 0..3 or None, "
                                 f"got shape {self.rotations.shape}")
        if (self.scales is None) != (self.offsets is None):
            raise ValueError("scales and offsets must be given together (a jittered dataset) or both be None")
        if self.scales is not None:
            self.scales, self.offsets = check_jitter_labels(len(self.shapes), self.scales, self.offsets)

    @property
    def jittered(self) -> bool:
        """Whether the sprites carry scales and offsets (:func:`sample_jitter`)."""
        return self.scales is not None

    def _jitter(self, k: int, index=slice(None)) -> tuple[np.ndarray | None, np.ndarray | None]:
        if self.scales is None:
            return None, None
        return rotate_jitter(self.scales[index], self.offsets[index], k)

    @property
    def layout(self) -> str:
        """``upright`` when the generated image of every sample is known (``rotations`` set)."""
        return "independent" if self.rotations is None else "upright"

    def canonical(self) -> ShapesDataset:
        """The generated (canonical) image of every sample, ``g^{-p}`` of it (``upright`` only):
        all orientations 0 and ``rotations`` 0."""
        if self.rotations is None:
            raise ValueError("canonical() needs the upright layout (rotations known), got layout 'independent'")
        images = self.images.clone()
        s, o = self.shapes.copy(), self.orientations.copy()
        sc = None if self.scales is None else self.scales.copy()
        off = None if self.offsets is None else self.offsets.copy()
        for k in range(1, 4):
            sel = self.rotations == k
            if sel.any():
                images[sel] = rotate_images(self.images[sel], -k)
                s[sel], o[sel] = rotate_labels(self.shapes[sel], self.orientations[sel], -k)
                if sc is not None:
                    sc[sel], off[sel] = self._jitter(-k, sel)
        return ShapesDataset(images, s, o, np.zeros(len(self), np.int64), sc, off)

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, index) -> ShapesDataset:
        """A sub-dataset: ``index`` is a slice, an integer array or a boolean mask."""
        if isinstance(index, (int, np.integer)):
            index = slice(int(index), int(index) + 1 or None)
        idx = index.cpu().numpy() if isinstance(index, Tensor) else index
        return ShapesDataset(self.images[torch.as_tensor(np.arange(len(self))[idx])],
                             self.shapes[idx], self.orientations[idx],
                             None if self.rotations is None else self.rotations[idx],
                             None if self.scales is None else self.scales[idx],
                             None if self.offsets is None else self.offsets[idx])

    def orbit_keys(self) -> np.ndarray:
        """One int64 per image identifying its C4 orbit (equal keys ⇔ one image is a rotation
        of the other): the smallest label code over the four rotations."""
        return orbit_keys(self.shapes, self.orientations)


def _codes(shapes: np.ndarray, orientations: np.ndarray) -> np.ndarray:
    # sprite id in 0..31 per quadrant, base-32 digits over the four positions
    ids = shapes * 4 + orientations
    return (ids * (32 ** np.arange(NUM_POSITIONS))).sum(1)


def orbit_keys(shapes, orientations) -> np.ndarray:
    """``(n,)`` int64 orbit identifiers of labelled images (see :meth:`ShapesDataset.orbit_keys`)."""
    return np.min(np.stack([_codes(*rotate_labels(shapes, orientations, k)) for k in range(4)]), axis=0)


LAYOUTS = ("upright", "independent")
POOLS = ("train", "probe", "heldout")
POOL_FRACTIONS = (0.70, 0.15, 0.15)


def sample_labels(n: int, rng: np.random.Generator, layout: str = "independent"
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Random labels ``(n, 4)`` and, under ``upright``, each sample's rotation ``p`` ``(n,)``.

    ``independent``: a uniform shape per quadrant and a uniform rotation out of four per quadrant
    (so each of a shape's distinct orientations is equally likely); rotations ``None``.
    ``upright``: a uniform shape per quadrant in orientation 0 (the generated image), then the whole
    image rotated by a uniform ``p``: the labels returned are those of ``g^p x``."""
    check_choice("layout", layout, LAYOUTS)
    shapes = rng.integers(0, len(SHAPES), size=(n, NUM_POSITIONS)).astype(np.int64)
    if layout == "independent":
        rotations = rng.integers(0, 4, size=(n, NUM_POSITIONS))
        return shapes, (rotations % np.asarray(NUM_ORIENTATIONS)[shapes]).astype(np.int64), None
    p = rng.integers(0, 4, size=n).astype(np.int64)
    cols = (np.arange(NUM_POSITIONS)[None, :] - p[:, None]) % NUM_POSITIONS  # position j holds canonical j - p
    s = np.take_along_axis(shapes, cols, axis=1)
    o = (p[:, None] % np.asarray(NUM_ORIENTATIONS)[s]).astype(np.int64)
    return s, o, p


def _mix(keys: np.ndarray) -> np.ndarray:
    """A fixed 64-bit hash (splitmix64's finaliser) of int64 keys, as float in [0, 1)."""
    z = keys.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def orbit_pool(shapes, orientations) -> np.ndarray:
    """The pool (index into :data:`POOLS`) of each labelled image's C4 orbit ``(n,)`` int64: a fixed
    hash of :func:`orbit_keys`, so all rotations of an image share a pool."""
    u = _mix(orbit_keys(shapes, orientations))
    return np.searchsorted(np.cumsum(POOL_FRACTIONS)[:-1], u, side="right").astype(np.int64)


def upright_label_sets() -> tuple[np.ndarray, np.ndarray]:
    """All 8⁴ = 4,096 upright label sets (generated images): shapes ``(4096, 4)``, orientations 0."""
    s = np.stack(np.meshgrid(*[np.arange(len(SHAPES))] * NUM_POSITIONS, indexing="ij"), -1).reshape(-1, NUM_POSITIONS)
    return s.astype(np.int64), np.zeros_like(s, dtype=np.int64)


def make_dataset(n: int, seed: int, *, layout: str = "independent", pool: str | None = None,
                 disjoint_from: ShapesDataset | None = None, jitter: float = 0.0) -> ShapesDataset:
    """``n`` random images of ``layout`` drawn with ``numpy.random.default_rng(seed)``.

    ``pool`` (one of :data:`POOLS`) keeps only images whose C4 orbit lies in that pool, so sets
    drawn from different pools share no orbit (under ``upright``: no label set). With
    ``disjoint_from``, images whose C4 orbit meets that dataset are skipped as well.

    ``jitter`` in [0, 1] (default 0: the book's images, unchanged) draws every sprite at a random
    scale and shift inside its quadrant (:func:`sample_jitter`, from a second generator seeded by
    ``(seed, 1)``, so the labels are those of ``jitter = 0``). Under ``upright`` the jitter is drawn for
    the generated image and turns with it (:func:`rotate_jitter`), so ``g^p`` still acts exactly."""
    from esae.checks import check_float

    check_float("jitter", jitter, 0.0, 1.0)
    data = _make_unjittered(n, seed, layout=layout, pool=pool, disjoint_from=disjoint_from)
    if jitter == 0:
        return data
    scales, offsets = sample_jitter(len(data), np.random.default_rng((seed, 1)), jitter)
    if data.rotations is not None:  # drawn for the generated image, then turned with it
        for k in range(1, 4):
            sel = data.rotations == k
            scales[sel], offsets[sel] = rotate_jitter(scales[sel], offsets[sel], k)
    return ShapesDataset(render(data.shapes, data.orientations, scales, offsets), data.shapes, data.orientations,
                         data.rotations, scales, offsets)


def _make_unjittered(n: int, seed: int, *, layout: str, pool: str | None,
                     disjoint_from: ShapesDataset | None) -> ShapesDataset:
    check_int("n", n, 1)
    check_int("seed", seed, 0)
    check_choice("layout", layout, LAYOUTS)
    if pool is not None:
        check_choice("pool", pool, POOLS)
    rng = np.random.default_rng(seed)
    if pool is None and disjoint_from is None:
        shapes, orientations, rotations = sample_labels(n, rng, layout)
        return ShapesDataset(render(shapes, orientations), shapes, orientations, rotations)
    seen = set(disjoint_from.orbit_keys().tolist()) if disjoint_from is not None else set()
    parts: list[tuple] = []
    have, tries = 0, 0
    while have < n:
        s, o, r = sample_labels(max(n - have, 64) * 8, rng, layout)
        keep = np.ones(len(s), dtype=bool)
        if pool is not None:
            keep &= orbit_pool(s, o) == POOLS.index(pool)
        if seen:
            keep &= np.array([k not in seen for k in orbit_keys(s, o).tolist()], dtype=bool)
        idx = np.flatnonzero(keep)[: n - have]
        tries += 1
        if len(idx) == 0 and tries > 50:
            raise ValueError(f"no image of layout {layout!r} is left in pool {pool!r} outside disjoint_from; "
                             f"cannot draw n={n}")
        parts.append((s[idx], o[idx], None if r is None else r[idx]))
        have += len(idx)
    shapes = np.concatenate([p[0] for p in parts])
    orientations = np.concatenate([p[1] for p in parts])
    rotations = None if layout == "independent" else np.concatenate([p[2] for p in parts])
    return ShapesDataset(render(shapes, orientations), shapes, orientations, rotations)


def rotate(dataset: ShapesDataset, k: int) -> ShapesDataset:
    """The dataset acted on by ``g^k``: images rotated by ``k`` × 90° counter-clockwise and labels
    transformed to match (:func:`rotate_labels`)."""
    shapes, orientations = rotate_labels(dataset.shapes, dataset.orientations, k)
    rotations = None if dataset.rotations is None else (dataset.rotations + int(k)) % 4
    scales, offsets = dataset._jitter(int(k))
    return ShapesDataset(rotate_images(dataset.images, int(k)), shapes, orientations, rotations, scales, offsets)


# --------------------------------------------------------------------------------------------
# probing tasks (appendix C.1)

TASK_GROUPS = ("S", "SO", "SP", "SPO")


@dataclass(frozen=True)
class ProbingTask:
    """A binary task: does the image contain ``shape`` (at ``position`` and/or in ``orientation``
    where the group names them: S, SO, SP, SPO)?"""

    group: str
    shape: int
    position: int | None = None
    orientation: int | None = None

    def __post_init__(self) -> None:
        check_choice("group", self.group, TASK_GROUPS)
        check_int("shape", self.shape, 0, len(SHAPES) - 1)
        if ("P" in self.group) != (self.position is not None):
            raise ValueError(f"position must be given exactly for groups SP and SPO, got {self.position!r} "
                             f"for {self.group}")
        if ("O" in self.group) != (self.orientation is not None):
            raise ValueError(f"orientation must be given exactly for groups SO and SPO, got {self.orientation!r} "
                             f"for {self.group}")
        if self.position is not None:
            check_int("position", self.position, 0, NUM_POSITIONS - 1)
        if self.orientation is not None:
            check_int("orientation", self.orientation, 0, NUM_ORIENTATIONS[self.shape] - 1)

    @property
    def name(self) -> str:
        """E.g. ``SPO(arrow, p=1, o=2)``."""
        parts = [SHAPES[self.shape]]
        if self.position is not None:
            parts.append(f"p={self.position}")
        if self.orientation is not None:
            parts.append(f"o={self.orientation}")
        return f"{self.group}({', '.join(parts)})"

    @property
    def invariant(self) -> bool:
        """Whether the label is unchanged by rotating the image (only the S tasks)."""
        return self.group == "S"


@lru_cache(maxsize=1)
def _tasks() -> tuple[ProbingTask, ...]:
    S = range(len(SHAPES))
    P = range(NUM_POSITIONS)
    tasks = [ProbingTask("S", s) for s in S]
    tasks += [ProbingTask("SO", s, orientation=o) for s in S for o in range(NUM_ORIENTATIONS[s])]
    tasks += [ProbingTask("SP", s, position=p) for s in S for p in P]
    tasks += [ProbingTask("SPO", s, position=p, orientation=o)
              for s in S for p in P for o in range(NUM_ORIENTATIONS[s])]
    return tuple(tasks)


def probing_tasks() -> list[ProbingTask]:
    """The 180 tasks of appendix C.1, in group order: 8 S, 28 SO, 32 SP, 112 SPO."""
    return list(_tasks())


def task_labels(dataset: ShapesDataset, tasks: list[ProbingTask] | None = None) -> np.ndarray:
    """Binary labels ``(n, n_tasks)`` bool of ``dataset`` for ``tasks`` (default: all 180)."""
    tasks = probing_tasks() if tasks is None else list(tasks)
    s, o = check_labels(dataset.shapes, dataset.orientations)
    n = len(s)
    # present[i, p, s, o]: image i has shape s in orientation o at position p
    present = np.zeros((n, NUM_POSITIONS, len(SHAPES), 4), dtype=bool)
    rows = np.repeat(np.arange(n), NUM_POSITIONS)
    cols = np.tile(np.arange(NUM_POSITIONS), n)
    present[rows, cols, s.ravel(), o.ravel()] = True
    any_pos = present.any(1)  # (n, 8, 4)
    out = np.empty((n, len(tasks)), dtype=bool)
    for j, t in enumerate(tasks):
        if not isinstance(t, ProbingTask):
            raise ValueError(f"tasks must hold ProbingTask objects, got {type(t).__name__} at index {j}")
        if t.group == "S":
            out[:, j] = any_pos[:, t.shape].any(1)
        elif t.group == "SO":
            out[:, j] = any_pos[:, t.shape, t.orientation]
        elif t.group == "SP":
            out[:, j] = present[:, t.position, t.shape].any(1)
        else:
            out[:, j] = present[:, t.position, t.shape, t.orientation]
    return out


def one_hot(dataset: ShapesDataset) -> Tensor:
    """Indicator features ``(n, 4·8·4)`` float32: entry ``[i, 32p + 4s + o]`` is 1 when image ``i``
    has shape ``s`` in orientation ``o`` at position ``p`` (a complete description of the image)."""
    s, o = check_labels(dataset.shapes, dataset.orientations)
    out = torch.zeros(len(s), NUM_POSITIONS, len(SHAPES) * 4)
    out.scatter_(2, torch.from_numpy(s * 4 + o)[:, :, None], 1.0)
    return out.flatten(1)


def expected_negative_share(task: ProbingTask, layout: str = "independent") -> float:
    """The probability that a random image is a negative example of ``task`` under
    :func:`sample_labels` with ``layout`` (shape uniform over 8; rotation uniform over 4 per
    quadrant for ``independent``, one rotation of the whole image for ``upright``)."""
    check_choice("layout", layout, LAYOUTS)
    n_orient = NUM_ORIENTATIONS[task.shape]
    if layout == "upright" and task.orientation is not None:
        # every shape shows orientation p mod n_s: the image's rotation decides it for all quadrants
        p_shape = 1 / len(SHAPES)
        quadrants = 1 if task.position is not None else NUM_POSITIONS
        return 1 - (1 / n_orient) * (1 - (1 - p_shape) ** quadrants)
    p_shape = 1 / len(SHAPES)
    per_quadrant = p_shape / n_orient if task.orientation is not None else p_shape
    quadrants = 1 if task.position is not None else NUM_POSITIONS
    return (1 - per_quadrant) ** quadrants
