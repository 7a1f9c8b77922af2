"""ROAD (Rong et al. 2022): remove pixels, fill them by noisy linear imputation, and measure
the model without retraining.

Each removed pixel must equal the weighted mean of its 8 neighbours (1/6 for edge neighbours,
1/12 for diagonal ones; neighbours outside the image drop out). Known neighbours move to the
right-hand side, which leaves one sparse, symmetric, diagonally dominant system per image
(shared by its channels). ROAD's authors solve it with scipy's `spsolve`; scipy is not a
runtime dependency, so this module runs preconditioned conjugate gradients in numpy (float32
vectors, float64 step sizes) on each mask's bounding box, until each residual is below
`tolerance` (default 1e-5) times its right-hand side. Two preconditioners share the work,
chosen per mask before any iteration:

- Jacobi (the diagonal) where every removed pixel lies within `DEEP_HOLE` pixels of a known
  one, as with scattered pixels from a noisy heat map: a few cheap steps suffice there. It
  runs one mask at a time (the channels of an image and fraction together: vectors small
  enough to stay in the core's cache), on a padded flat layout with preallocated buffers
  (`PaddedGrid`, `jacobi_pcg`), from a push-pull first guess or, for a mask containing the
  previous one on the same image (ROAD's fractions remove nested sets), from that one's
  solution.
- One multigrid V-cycle where holes are deeper, as with the large blobs a smooth attribution
  map removes: Jacobi's steps carry information one pixel at a time (a 60-pixel hole took
  ~300), the V-cycle's coarse grids carry it across the image, and 4-6 steps from zero
  suffice. Its coarse operators are Galerkin products Pᵀ A P (bilinear P kept on removed
  pixels), built once per mask and shared by its channels; Jacobi systems not converged
  after `JACOBI_ITERATIONS` steps switch to it as well. The masks of a call run in step
  (`solve_deep`): each on its box down to grids of `SHARED_GRID` points, the coarser grids
  for all of them at once on the image's, so that those grids' numpy calls, mostly
  overhead, serve 7 masks instead of one.

On 2 images × 7 fractions × 3 channels (benchmarks/bench_road.py, one core) this takes
0.042 s on random and 0.078 s on smooth 112×112 maps (Jacobi-PCG alone: 0.092 s and 0.77 s),
0.19 s and 0.28 s at 224×224 (0.38 s and 5.7 s); ROAD on the Grad-CAM maps of
benchmarks/bench_forward.py, ~40 ms per 112×112 image. The tests compare both paths with
`spsolve`: within 1e-5 at a tight tolerance, and within 1e-3 at the default one, far below the
imputation noise (std 0.01).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from onnxpath.evaluate.perturbation import (
    Forward,
    forward_stacks,
    pixel_order,
    removal_positions,
    softmax,
)

ROAD_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.9)
# The stencil is separable: [1, 2, 1] ⊗ [1, 2, 1] / 12 has the 1/12 corners and 1/6 edges,
# plus a centre of 4/12 that `neighbour_sum` takes back out.


def neighbour_sum(v: np.ndarray) -> np.ndarray:
    """Σ_n w_n v[p + n] over the 8 neighbours of every pixel (last two axes), zero outside."""
    # [1, 2, 1] along rows, then along columns, on zero-padded copies: 4 adds, not 8.
    rows = 2.0 * v
    rows[..., 1:, :] += v[..., :-1, :]
    rows[..., :-1, :] += v[..., 1:, :]
    both = 2.0 * rows
    both[..., :, 1:] += rows[..., :, :-1]
    both[..., :, :-1] += rows[..., :, 1:]
    both -= 4.0 * v
    both /= 12.0
    return both


def block_sums(a: np.ndarray) -> np.ndarray:
    """Sums over 2×2 blocks of the last two axes (a last odd row or column alone), by strided
    adds: numpy's reductions over length-2 axes are several times slower."""
    h, w = a.shape[-2:]
    rows = a[..., 0::2, :].copy()
    rows[..., :h // 2, :] += a[..., 1::2, :]
    both = rows[..., 0::2].copy()
    both[..., :w // 2] += rows[..., 1::2]
    return both


def pyramid_fill(x: np.ndarray, known: np.ndarray) -> np.ndarray:
    """A cheap smooth first guess for the solver: unknown pixels take the known-weighted mean
    of ever coarser 2×2 blocks (push-pull). It removes the low-frequency error that conjugate
    gradients are slowest to remove on large holes."""
    h, w = x.shape[-2:]
    if h == 1 and w == 1:
        return np.where(known, x, 0.0)
    weight = known.astype(x.dtype)  # counts up to 4^k: exact in float32
    weight_sums = block_sums(weight)
    total = block_sums(weight * x)
    coarse_known = weight_sums > 0
    coarse = total / np.maximum(weight_sums, 1e-12)
    if not coarse_known.all():
        coarse = pyramid_fill(coarse, coarse_known)
    up = coarse.repeat(2, axis=-2).repeat(2, axis=-1)[..., :h, :w]
    return np.where(known, x, up)


# Multigrid's settings, measured on 112×112 and 224×224 attribution maps (benchmarks/bench_road.py).
DAMPING = 0.9  # damped-Jacobi smoothing weight (the stencil's D⁻¹A has eigenvalues up to 4/3)
COARSEST_PIXELS = 100  # coarsening stops at this many grid points, solved by a dense inverse
# A mask with a pixel farther than this from every known pixel goes to multigrid. At 6, the
# 90% fraction of a random 112×112 map (holes 6 deep) stays with Jacobi-PCG: 41 steps, 3 ms
# per image less than multigrid's 5 and its set-up.
DEEP_HOLE = 6
JACOBI_ITERATIONS = 60  # Jacobi-PCG systems still unconverged after this many switch too
STENCIL = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]  # 9-point offsets; 4 = centre


def dot(a: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Per-system inner products over the last two axes of (S, H, W) arrays, in float64
    (see `system_dots`)."""
    return system_dots(a.reshape(len(a), -1), c.reshape(len(c), -1))[:, None, None]


def has_deep_hole(unknown: np.ndarray, depth: int = DEEP_HOLE) -> np.ndarray:
    """Per mask (M, H, W): whether some unknown pixel survives `depth` 3×3 erosions, i.e. lies
    more than `depth` pixels from every known one. Jacobi-PCG needs about five iterations per
    pixel of that distance (it moves information one pixel per step), multigrid a handful in
    all, so this routes each system before any iteration is spent. Outside the image counts
    as unknown: the image border holds no value."""
    alive = unknown.copy()
    for _ in range(depth):
        rows = alive.copy()
        rows[:, 1:] &= alive[:, :-1]
        rows[:, :-1] &= alive[:, 1:]
        alive = rows.copy()
        alive[:, :, 1:] &= rows[:, :, :-1]
        alive[:, :, :-1] &= rows[:, :, 1:]
    return alive.any(axis=(-2, -1))


def coarse_size(n: int) -> int:
    """Coarse points sit on every other fine pixel, 0, 2, …, plus one past an even end, so that
    each fine pixel lies on or between two coarse points."""
    return n // 2 + 1


def along(axis: int, part: slice) -> tuple:
    """An index selecting `part` of `axis` (-2 or -1) and everything of the other axes."""
    return (..., part) if axis == -1 else (..., part, slice(None))


def prolong_axis(coarse: np.ndarray, n: int, axis: int) -> np.ndarray:
    """Linear interpolation along `axis` (-2 or -1) onto `n` fine pixels."""
    shape = list(coarse.shape)
    shape[axis] = n
    fine = np.empty(shape, dtype=coarse.dtype)
    fine[along(axis, slice(0, None, 2))] = coarse[along(axis, slice(0, (n + 1) // 2))]
    odd = fine[along(axis, slice(1, None, 2))]
    np.add(coarse[along(axis, slice(0, n // 2))], coarse[along(axis, slice(1, n // 2 + 1))],
           out=odd)
    odd *= 0.5
    return fine


def restrict_axis(fine: np.ndarray, axis: int) -> np.ndarray:
    """The transpose of `prolong_axis` (so that the two-grid preconditioner stays symmetric)."""
    n = fine.shape[axis]
    shape = list(fine.shape)
    shape[axis] = coarse_size(n)
    coarse = np.empty(shape, dtype=fine.dtype)
    coarse[along(axis, slice(0, (n + 1) // 2))] = fine[along(axis, slice(0, None, 2))]
    if n % 2 == 0:
        coarse[along(axis, slice(n // 2, None))] = 0
    half = 0.5 * fine[along(axis, slice(1, None, 2))]
    coarse[along(axis, slice(0, n // 2))] += half
    coarse[along(axis, slice(1, n // 2 + 1))] += half
    return coarse


def prolong(coarse: np.ndarray, shape: tuple[int, int], inside: np.ndarray) -> np.ndarray:
    """Bilinear interpolation, kept on the unknown points (`inside`) of the finer grid."""
    fine = prolong_axis(prolong_axis(coarse, shape[0], -2), shape[1], -1)
    fine *= inside
    return fine


def restrict(fine: np.ndarray) -> np.ndarray:
    """Pᵀ: full weighting of a residual that is already zero off the unknown points."""
    return restrict_axis(restrict_axis(fine, -2), -1)


def add_row_neighbours(out: np.ndarray, v: np.ndarray) -> None:
    """out[..., i, j] += v[..., i, j - 1] + v[..., i, j + 1] (zero outside), for contiguous
    (S, H, W) arrays. Shifting each system as one long row makes both adds contiguous (numpy
    runs short strided rows at half the speed); the values that wrap from the end of one row
    to the start of the next are then taken back out."""
    flat_out, flat_v = out.reshape(len(out), -1), v.reshape(len(v), -1)
    flat_out[:, 1:] += flat_v[:, :-1]
    flat_out[:, :-1] += flat_v[:, 1:]
    out[..., 1:, 0] -= v[..., :-1, -1]
    out[..., :-1, -1] -= v[..., 1:, 0]


class ImageLevel:
    """The system itself on the image grid, one per row of `inside` (S, H, W; 1 on unknown
    pixels): A v = inside ⊙ (diagonal ⊙ v − neighbour_sum(v))."""

    def __init__(self, inside: np.ndarray, diagonal: np.ndarray | None = None):
        self.inside = inside
        if diagonal is None:  # the whole image (on a crop, its neighbours outside still count)
            diagonal = neighbour_sum(np.ones(inside.shape[-2:], dtype=inside.dtype))
        self.diagonal = diagonal
        # (a 1×1 image has no neighbours, so no diagonal: its one system has nothing to solve)
        self.inverse_diagonal = np.divide(1.0, diagonal, out=np.zeros_like(diagonal),
                                          where=diagonal > 0)
        self.damped_inverse = DAMPING * self.inverse_diagonal
        # neighbour_sum(v) = ([1 2 1] ⊗ [1 2 1] ∗ v − 4 v) / 12: folding its centre and the
        # division into the diagonal and the mask saves four passes over v per product.
        self.centre = 12.0 * diagonal + 4.0
        self.inside_twelfth = inside / 12.0

    def apply(self, v: np.ndarray) -> np.ndarray:
        rows = v + v
        rows[..., 1:, :] += v[..., :-1, :]
        rows[..., :-1, :] += v[..., 1:, :]
        both = rows + rows
        add_row_neighbours(both, rows)
        out = self.centre * v
        out -= both
        out *= self.inside_twelfth
        return out


class StencilLevel:
    """A coarse grid's Galerkin operators, a 9-point stencil per point and mask (M, 9, h, w),
    in `STENCIL` order, applied to the systems of every mask at once (M, C, h, w: C systems
    per mask); points with a zero centre are not unknowns of this level."""

    def __init__(self, coefficients: np.ndarray):
        self.coefficients = coefficients
        m, _, h, w = coefficients.shape
        centre = coefficients[:, 4, None]
        self.inside = (centre > 0).astype(coefficients.dtype)
        self.inverse_diagonal = self.inside / np.where(centre > 0, centre, 1)
        self.damped_inverse = DAMPING * self.inverse_diagonal
        # The product runs on zero-padded grids, all systems flattened into one array, where
        # each neighbour is a fixed offset: 8 contiguous multiply-adds over every system at
        # once. The padding's coefficients are zero, so what lands there is zero.
        padded = np.zeros((9, m, 1, h + 2, w + 2), dtype=coefficients.dtype)
        padded[:, :, 0, 1:-1, 1:-1] = coefficients.transpose(1, 0, 2, 3)
        self.padded_coefficients = padded
        self.flat: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # per systems per mask

    def buffers(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """The coefficients repeated for `c` systems per mask, flat (9, M·c·(h+2)·(w+2)),
        and the zero-padded input buffer (M, c, h+2, w+2) of the product, built once: a
        broadcast over the systems made every multiply twice as slow."""
        if c not in self.flat:
            coefficients = np.repeat(self.padded_coefficients, c, axis=2)
            self.flat[c] = (coefficients.reshape(9, -1),
                            np.zeros(coefficients.shape[1:], dtype=coefficients.dtype))
        return self.flat[c]

    def apply(self, v: np.ndarray) -> np.ndarray:
        m, c, h, w = v.shape
        coefficients, padded = self.buffers(c)
        padded[..., 1:-1, 1:-1] = v  # (the border stays zero)
        flat = padded.reshape(-1)
        out = coefficients[4] * flat
        first, end = w + 3, len(flat) - w - 3  # the span holding every inner point
        span, term = out[first:end], np.empty(end - first, dtype=v.dtype)
        for k, (dy, dx) in enumerate(STENCIL):
            if k != 4:
                shift = dy * (w + 2) + dx
                np.multiply(coefficients[k, first:end], flat[first + shift:end + shift],
                            out=term)
                span += term
        return out.reshape(m, c, h + 2, w + 2)[..., 1:-1, 1:-1]

    def apply_to_probes(self, v: np.ndarray) -> np.ndarray:
        """`apply` for `galerkin`'s 9 probes per mask, with the coefficients broadcast over
        them rather than repeated 9 times (once per level: the copy would cost more)."""
        m, c, h, w = v.shape
        padded = np.zeros((m, c, h + 2, w + 2), dtype=v.dtype)
        padded[..., 1:-1, 1:-1] = v
        flat = padded.reshape(m, c, -1)
        coefficients = self.padded_coefficients.reshape(9, m, 1, -1)
        out = coefficients[4] * flat
        first, end = w + 3, flat.shape[-1] - w - 3
        term = np.empty((m, c, end - first), dtype=v.dtype)
        for k, (dy, dx) in enumerate(STENCIL):
            if k != 4:
                shift = dy * (w + 2) + dx
                np.multiply(coefficients[k, ..., first:end],
                            flat[..., first + shift:end + shift], out=term)
                out[..., first:end] += term
        return out.reshape(m, c, h + 2, w + 2)[..., 1:-1, 1:-1]

    def take(self, index: np.ndarray) -> StencilLevel:
        taken = object.__new__(StencilLevel)  # sliced, not rebuilt: this runs on every compaction
        taken.coefficients, taken.inside = self.coefficients[index], self.inside[index]
        taken.inverse_diagonal = self.inverse_diagonal[index]
        taken.damped_inverse = self.damped_inverse[index]
        taken.padded_coefficients, taken.flat = self.padded_coefficients[:, index], {}
        return taken


def galerkin(level: ImageLevel | StencilLevel, shape: tuple[int, int]) -> np.ndarray:
    """The 9-point stencils (M, 9, h, w) of Pᵀ A P on the next coarser grid, for every mask of
    `level`, probed: coarse unit vectors on one of 9 residue classes (mod 3 in each direction)
    never share a 3×3 neighbourhood, so each probe Pᵀ A P e yields, at every coarse point, its
    coupling to the one probed point next to it. Bilinear P and a 9-point A give a 9-point
    Pᵀ A P, so 9 probes give them all; they run as 9 systems of each mask."""
    h, w = coarse_size(shape[0]), coarse_size(shape[1])
    e = np.zeros((3, 3, h, w), dtype=level.inside.dtype)
    for cy in range(3):
        for cx in range(3):
            e[cy, cx, cy::3, cx::3] = 1
    e = e.reshape(9, h, w)
    if level.inside.ndim == 4:  # (a stencil level's masks: the same probes for each)
        e = np.broadcast_to(e, (len(level.inside), 9, h, w))
    apply = level.apply_to_probes if isinstance(level, StencilLevel) else level.apply
    probes = restrict(apply(prolong(e, shape, level.inside)))
    return probes.reshape(-1, 9 * h * w)[:, probe_index(h, w)]


@functools.lru_cache(maxsize=64)
def probe_index(h: int, w: int) -> np.ndarray:
    """Flat indices into `galerkin`'s probes (3, 3, h, w) of each point's 9 couplings (9, h,
    w): the neighbour at +(dy, dx) of point I has residue I + d. One gather, cached per
    grid shape."""
    row, col = np.arange(h)[:, None], np.arange(w)[None, :]
    return np.stack([(((row + dy) % 3) * 3 + (col + dx) % 3) * (h * w) + row * w + col
                     for dy, dx in STENCIL])


class CoarsestLevel:
    """The coarsest grid, solved by a dense inverse (float64) of each mask's stencils' matrix."""

    def __init__(self, coefficients: np.ndarray | None = None, inverse: np.ndarray | None = None):
        self.inverse = self.dense_inverse(coefficients) if inverse is None else inverse

    @staticmethod
    def dense_inverse(coefficients: np.ndarray) -> np.ndarray:
        """(M, 1, n, n): one call of np.linalg.inv for every mask's matrix."""
        n, _, h, w = coefficients.shape
        index = np.arange(h * w).reshape(h, w)
        dense = np.zeros((n, h * w, h * w))
        for k, (dy, dx) in enumerate(STENCIL):
            rows = index[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
            cols = index[max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)]
            dense[:, rows.ravel(), cols.ravel()] = coefficients[
                :, k, max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)].reshape(n, -1)
        dense = 0.5 * (dense + dense.transpose(0, 2, 1))
        # Pᵀ A P is singular where restricted columns of P coincide (one unknown pixel between
        # four coarse points): a small diagonal shift keeps the inverse finite, and P maps
        # those directions back to zero. Points with no unknown pixel get a unit diagonal.
        diagonal = np.einsum("nii->ni", dense)
        dense[:, index.ravel(), index.ravel()] += np.where(diagonal > 0, 1e-4 * diagonal, 1.0)
        return np.linalg.inv(dense)[:, None]

    def solve(self, r: np.ndarray) -> np.ndarray:
        # one matrix-vector product per system (M, C): a system's result does not depend on
        # how many others share its mask
        m, c, h, w = r.shape
        flat = r.reshape(m, c, h * w, 1).astype(np.float64)
        return (self.inverse @ flat).reshape(r.shape).astype(r.dtype)

    def take(self, index: np.ndarray) -> CoarsestLevel:
        return CoarsestLevel(inverse=self.inverse[index])


class CoarseGrids:
    """The coarse levels of the multigrid V-cycle, for every mask at once: the image's coarse
    grids (every mask's on the same ones, zero stencils where a mask has no unknown), one
    Galerkin operator per mask, so that each numpy call of a coarse level serves every system
    (on a 15×15 grid most of a call's time is its overhead), and an exact solve at the
    coarsest grid."""

    def __init__(self, levels: list[StencilLevel], coarsest: CoarsestLevel,
                 shapes: list[tuple[int, int]], grid: tuple[int, int]):
        self.levels, self.coarsest, self.shapes = levels, coarsest, shapes
        self.grid = grid  # the first coarse grid's shape

    @classmethod
    def build(cls, coefficients: np.ndarray) -> CoarseGrids:
        """From the first coarse grid's stencils (M, 9, h, w)."""
        levels: list[StencilLevel] = []
        shapes: list[tuple[int, int]] = []
        grid = coefficients.shape[-2:]
        while coefficients.shape[-2] * coefficients.shape[-1] > COARSEST_PIXELS:
            levels.append(StencilLevel(coefficients))
            shapes.append(coefficients.shape[-2:])
            coefficients = galerkin(levels[-1], shapes[-1])
        return cls(levels, CoarsestLevel(coefficients), shapes, grid)

    def cycle(self, r: np.ndarray, depth: int = 0) -> np.ndarray:
        """The V-cycle below the fine grid, on restricted residuals (M, C, h, w)."""
        if depth == len(self.levels):
            return self.coarsest.solve(r)
        level = self.levels[depth]
        x = r * level.damped_inverse
        residual = level.apply(x)
        np.subtract(r, residual, out=residual)
        x += prolong(self.cycle(restrict(residual), depth + 1), self.shapes[depth],
                     level.inside)
        residual = level.apply(x)
        np.subtract(r, residual, out=residual)
        residual *= level.damped_inverse
        x += residual
        return x

    def take(self, index: np.ndarray) -> CoarseGrids:
        return CoarseGrids([level.take(index) for level in self.levels],
                           self.coarsest.take(index), self.shapes, self.grid)


def mask_cycle(levels: list, r: np.ndarray, depth: int = 0):
    """The V-cycle's steps on one mask's own grids (its box's, `levels`: the system itself,
    then Galerkin levels; r: its systems, C × h × w), a generator: at the bottom it yields the
    restricted residual (C × h × w), receives the correction of the image's coarser grids
    (`CoarseGrids.cycle`, run for every mask at once) and returns the preconditioned residual.
    Damped Jacobi before and after each coarse correction, bilinear P, R = Pᵀ: symmetric, so
    conjugate gradients can use it as is."""
    if depth == len(levels):
        correction = yield r.reshape(r.shape[-3:])
        return correction.reshape(r.shape)
    level = levels[depth]
    x = r * level.damped_inverse
    residual = level.apply(x)
    np.subtract(r, residual, out=residual)
    coarse = restrict(residual)
    correction = yield from mask_cycle(levels, coarse.reshape(1, *coarse.shape[-3:]),
                                       depth + 1)
    x += prolong(correction.reshape(coarse.shape), r.shape[-2:], level.inside)
    residual = level.apply(x)
    np.subtract(r, residual, out=residual)
    residual *= level.damped_inverse
    x += residual
    return x


def multigrid_pcg(levels: list, b: np.ndarray, v: np.ndarray, target: np.ndarray,
                  max_iterations: int):
    """Multigrid-preconditioned CG on one mask's systems (C × h × w) from `v`, until each
    residual norm is at most its `target`, a generator driven by `drive` (see `mask_cycle`);
    returns (solutions, iterations each took, or -1 where it did not converge).

    A system that has converged takes zero steps from then on: its values are final, and do
    not depend on the other systems of the batch."""
    iterations = np.full(len(v), -1)
    level = levels[0]
    v = v.copy()
    r = b - level.apply(v) if v.any() else b.copy()
    active = np.sqrt(dot(r, r)) > target
    iterations[~active[:, 0, 0]] = 0
    if not active.any():
        return v, iterations
    z = yield from mask_cycle(levels, r)
    p = z.copy()
    rz = dot(r, z)
    for iteration in range(1, max_iterations + 1):
        ap = level.apply(p)
        pap = dot(p, ap)
        # Step sizes from float64 reductions, applied in the vectors' own type: a float64
        # product of a float32 vector costs four times a float32 one.
        alpha = (rz / np.where(active & (pap > 0), pap, np.inf)).astype(v.dtype)
        v += alpha * p
        r -= alpha * ap
        # tested before the V-cycle, not after: the last one would go unused
        active = np.sqrt(dot(r, r)) > target
        iterations[(iterations < 0) & ~active[:, 0, 0]] = iteration
        if not active.any():
            break
        z = yield from mask_cycle(levels, r)
        rz_new = dot(r, z)
        beta = (rz_new / np.where(active & (rz > 0), rz, np.inf)).astype(v.dtype)
        p *= beta
        p += z
        rz = rz_new
    return v, iterations


def drive(solvers: list, coarse: CoarseGrids, origins: list[tuple[int, int]]) -> list:
    """Runs `multigrid_pcg` generators in step: each round stacks their restricted residuals
    onto the image's first coarse grid (each at its mask's `origin` there), runs the coarse
    V-cycle for all of them at once and hands each its part. Returns each one's result."""
    results: list = [None] * len(solvers)
    requests = {}
    for k, solver in enumerate(solvers):
        try:
            requests[k] = next(solver)
        except StopIteration as finished:  # converged from the start
            results[k] = finished.value
    live = np.arange(len(solvers))
    batch = coarse
    while requests:
        if len(requests) < len(live):  # the finished masks leave the coarse batch
            live = np.array(sorted(requests))
            batch = coarse.take(live)
        first = next(iter(requests.values()))
        stacked = np.zeros((len(live), *first.shape[:-2], *coarse.grid), dtype=first.dtype)
        parts = [grid_part(origins[k], requests[k].shape) for k in live]
        for i, k in enumerate(live):
            stacked[(i, ..., *parts[i])] = requests[k]
        corrections = batch.cycle(stacked)
        for i, k in enumerate(live):
            try:
                requests[k] = solvers[k].send(corrections[(i, ..., *parts[i])])
            except StopIteration as finished:
                results[k] = finished.value
                del requests[k]
    return results


class PaddedGrid:
    """`count` systems on an h×w grid, laid out in one flat array, each as (h + 2) × (w + 1):
    a zero row above and below and a zero column on the right. Every neighbour of a pixel is
    then a fixed offset into that array, and never another system's pixel, so the stencil runs
    as four contiguous adds over all systems at once, with no edge cases."""

    def __init__(self, count: int, h: int, w: int):
        self.count, self.h, self.w = count, h, w
        self.stride = w + 1

    def pack(self, a: np.ndarray) -> np.ndarray:
        """(count or 1, h, w) -> flat (count or 1) × length, zero on the padding."""
        out = np.zeros((len(a), self.h + 2, self.stride), dtype=a.dtype)
        out[:, 1:-1, :-1] = a
        return out.reshape(-1)

    def unpack(self, flat: np.ndarray) -> np.ndarray:
        return flat.reshape(-1, self.h + 2, self.stride)[:, 1:-1, :-1]

    def stencil(self, t: np.ndarray, pair: np.ndarray, out: np.ndarray) -> np.ndarray:
        """out = [1 2 1] ⊗ [1 2 1] ∗ t on every pixel (not on the padding, which holds
        leftovers): [1 2 1] is [1 1] twice, so each axis takes two adds, not three."""
        s = self.stride
        np.add(t[:-1], t[1:], out=pair[:-1])  # t[k] + t[k + 1]
        pair[-1] = t[-1]
        np.add(pair[:-1], pair[1:], out=out[1:])  # t[k - 1] + 2 t[k] + t[k + 1]
        out[0] = pair[0]
        np.add(out[:-s], out[s:], out=pair[:-s])  # the same with the row below
        np.add(pair[:-s], pair[s:], out=out[s:])  # and with the row above
        return out


def system_dots(a: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Per-system inner products of (count, length) arrays, in float64. They are summed in
    the vectors' type, by BLAS (several partial sums, so float32 loses ~1e-6 relative): a
    float64 accumulation of float32 vectors took 7 times as long."""
    return (a[:, None, :] @ c[:, :, None])[:, 0, 0].astype(np.float64)


def jacobi_pcg(b: np.ndarray, v: np.ndarray, inside: np.ndarray, diagonal: np.ndarray,
               target: np.ndarray, max_iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """Jacobi-PCG on systems sharing one mask (`inside`, h×w; b and v: count×h×w), until each
    residual norm is at most its `target`; (solutions, iterations each took, or -1).

    It runs on 12 A (integer stencil weights) in `PaddedGrid`'s layout with preallocated
    buffers: 13 passes over the vectors per step. The product is left unmasked (the
    preconditioner masks what it passes on), and the stopping test reuses rᵀD⁻¹r, an upper
    bound of |r|² (every diagonal is at most 1), so no further reduction is needed. A system
    that has converged takes zero steps from then on: its values are final, and do not depend
    on the other systems of the batch."""
    count, h, w = v.shape
    grid = PaddedGrid(count, h, w)
    dtype = v.dtype
    centre = grid.pack((12.0 * diagonal + 4.0)[None].astype(dtype)).reshape(1, -1)
    inverse = np.divide(inside, 12.0 * diagonal, out=np.zeros_like(diagonal),
                        where=inside > 0)
    inverse = grid.pack(inverse[None].astype(dtype)).reshape(1, -1)
    target2 = (12.0 * target) ** 2 / 12.0  # 12 rᵀ(12 D)⁻¹r ≥ |r|²
    x = grid.pack(v)
    r = grid.pack(12.0 * b)
    # (zeroed: what the stencil leaves on the padding must be finite, for 0 × it to be 0)
    pair, product, ap = np.zeros_like(x), np.zeros_like(x), np.zeros_like(x)
    z = np.empty_like(x)
    x2, r2, z2, ap2, product2 = (a.reshape(count, -1) for a in (x, r, z, ap, product))
    grid.stencil(x, pair, product)
    np.multiply(x2, centre, out=ap2)
    ap -= product
    r -= ap
    np.multiply(r2, inverse, out=z2)
    p = z.copy()
    p2 = p.reshape(count, -1)
    rz = system_dots(r2, z2)
    iterations = np.full(count, -1)
    for iteration in range(max_iterations + 1):
        active = rz > target2
        if not active.all():
            iterations[(iterations < 0) & ~active] = iteration
            if not active.any():
                break
        if iteration == max_iterations:
            break
        grid.stencil(p, pair, product)
        np.multiply(p2, centre, out=ap2)
        ap -= product
        pap = system_dots(p2, ap2)
        # Converged systems (and any without positive curvature) take zero steps; then r, z
        # and rᵀz stay exactly as they were.
        alpha = (rz / np.where(active & (pap > 0), pap, np.inf)).astype(dtype)[:, None]
        np.multiply(p2, alpha, out=product2)
        x += product
        np.multiply(ap2, alpha, out=product2)
        r -= product
        np.multiply(r2, inverse, out=z2)
        rz_new = system_dots(r2, z2)
        beta = (rz_new / np.where(active & (rz > 0), rz, np.inf)).astype(dtype)[:, None]
        np.multiply(p2, beta, out=p2)
        p += z
        rz = rz_new
    return grid.unpack(x), iterations


def crop_around(mask: np.ndarray, align: int) -> tuple[slice, slice]:
    """The unknown pixels' bounding box grown by one pixel (their known neighbours): the
    system of a mask involves nothing outside it. It starts on a row and column that are
    multiples of `align`, 2 to the power `shared_depth`, so that its coarse grids from that
    depth on are parts of the image's (`drive` stacks every mask's there)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    top, left = max(rows[0] - 1, 0), max(cols[0] - 1, 0)
    return (slice(top - top % align, min(rows[-1] + 2, h)),
            slice(left - left % align, min(cols[-1] + 2, w)))


# Coarse grids of at most this many points run for every mask at once (of 256, 1024 and
# 4096, the fastest on Grad-CAM maps at 112×112).
SHARED_GRID = 1024


def shared_depth(shape: tuple[int, int]) -> int:
    """The first coarse level whose image grid has at most `SHARED_GRID` points: finer
    levels run per mask on its box (smaller, and in the core's cache: 7 masks' vectors on
    the image's 57×57 grid were not), this one and the coarser ones for all masks at once
    (on a 15×15 grid most of a numpy call's time is its overhead). It depends on the image
    size alone, so a system's result does not depend on the other masks of the batch."""
    depth = 1
    while coarse_size(shape[0]) * coarse_size(shape[1]) > SHARED_GRID:
        shape, depth = (coarse_size(shape[0]), coarse_size(shape[1])), depth + 1
    return depth


# Nested masks on one image start from the previous mask's solution where it is already
# known (solved by Jacobi-PCG): on ROAD's fractions of random maps this saved 3 of 71 Jacobi
# steps per image.
WARM_START = True


def solve(x: np.ndarray, unknown: np.ndarray, tolerance: float = 1e-5,
          max_iterations: int = 2000) -> np.ndarray:
    """Values of the `unknown` pixels (zero elsewhere) solving the neighbour-mean system, one
    system per image and channel, each until its residual is below `tolerance` × its
    right-hand side (see `solve_counted`)."""
    return solve_counted(x, unknown, tolerance, max_iterations)[0]


class DeepMask:
    """One mask's systems waiting for multigrid-PCG, on the mask's box."""

    def __init__(self, systems: np.ndarray, box: tuple, level: ImageLevel, b: np.ndarray,
                 v: np.ndarray, target: np.ndarray, rest: np.ndarray):
        self.systems, self.box, self.level = systems, box, level
        self.b, self.v, self.target, self.rest = b, v, target, rest


def solve_counted(x: np.ndarray, unknown: np.ndarray, tolerance: float = 1e-5,
                  max_iterations: int = 2000, deep_hole: int = DEEP_HOLE,
                  jacobi_iterations: int = JACOBI_ITERATIONS
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`solve`, plus each system's Jacobi-PCG and multigrid-PCG iteration counts (flat over
    the leading axes; -1 where a phase did not converge, 0 where it was not run).

    Each mask's systems (its channels) are solved on the mask's bounding box. Masks with a
    hole deeper than `deep_hole` pixels go to multigrid-PCG; the others run Jacobi-PCG one
    mask at a time (their vectors fit the core's cache), and those still unconverged after
    `jacobi_iterations` continue from there with multigrid. Multigrid-PCG then runs every
    such mask in step: each on its own box for the fine grid, all together on the image's
    coarse grids (`drive`). A mask that contains the previous one, on the same image, starts
    from that one's solution where it is known (ROAD's fractions remove nested sets)."""
    shape = np.broadcast_shapes(x.shape, unknown.shape)
    h, w = shape[-2:]
    masks = unknown.reshape(-1, h, w)
    mask_of = np.broadcast_to(np.arange(len(masks)).reshape(unknown.shape[:-2]),
                              shape[:-2]).ravel()  # each system's mask
    values = np.broadcast_to(x, shape).reshape(-1, h, w)
    solution = np.zeros(values.shape, dtype=x.dtype)
    jacobi_counts = np.zeros(len(values), dtype=int)
    multigrid_counts = np.zeros(len(values), dtype=int)
    diagonal = neighbour_sum(np.ones((h, w), dtype=x.dtype))
    deep: list[DeepMask] = []
    depth = shared_depth((h, w))
    previous = None
    for m, mask in enumerate(masks):
        systems = np.flatnonzero(mask_of == m)
        if not len(systems) or not mask.any():
            continue
        box = (slice(None), *crop_around(mask, 2 ** depth))
        image, inside = values[systems][box], mask[box[1:]]
        in_mask = inside[None].astype(x.dtype)  # 1 on its unknown pixels
        b = in_mask * neighbour_sum(np.where(inside, 0.0, image).astype(x.dtype))
        target = tolerance * np.sqrt(dot(b, b))
        rest = np.ones(len(systems), dtype=bool)
        v = None
        if not has_deep_hole(inside[None], deep_hole)[0]:
            guess = warm_guess(previous, systems, mask, values, solution, box)
            if guess is None:
                guess = pyramid_fill(image, np.broadcast_to(~inside, image.shape))
            v, jacobi_counts[systems] = jacobi_pcg(
                b, in_mask * guess.astype(x.dtype), in_mask[0], diagonal[box[1:]],
                target[:, 0, 0], min(jacobi_iterations, max_iterations))
            rest = jacobi_counts[systems] < 0
            if not rest.any():
                solution[(systems, *box[1:])] = v
                previous = systems, mask
                continue
        previous = None
        level = ImageLevel(in_mask, diagonal[box[1:]])
        # Multigrid starts from zero (or where Jacobi-PCG left off): a push-pull guess,
        # smooth but with edges along its blocks, left residuals 2-4 times |b| there, and no
        # fewer iterations.
        v = np.zeros_like(b) if v is None else np.ascontiguousarray(v)
        deep.append(DeepMask(systems, box, level, b, v, target, rest))
    if deep:
        for mask, (v, counts) in zip(deep, solve_deep(deep, (h, w), depth, max_iterations),
                                     strict=True):
            solution[(mask.systems, *mask.box[1:])] = v
            multigrid_counts[mask.systems[mask.rest]] = counts[mask.rest]
    return solution.reshape(shape), jacobi_counts, multigrid_counts


def warm_guess(previous: tuple | None, systems: np.ndarray, mask: np.ndarray,
               values: np.ndarray, solution: np.ndarray, box: tuple) -> np.ndarray | None:
    """Jacobi-PCG's first guess from the previous mask's solution, where that one was solved
    already, on the same image, and the new mask contains it (ROAD's fractions remove nested
    sets); None otherwise."""
    if not WARM_START or previous is None:
        return None
    last_systems, last_mask = previous
    if (len(last_systems) != len(systems) or (last_mask & ~mask).any()
            or not np.array_equal(values[last_systems], values[systems])):
        return None
    filled = np.where(last_mask, solution[last_systems], values[systems])[box]
    known = np.broadcast_to(~mask[box[1:]] | last_mask[box[1:]], filled.shape)
    return pyramid_fill(filled, known)


def solve_deep(deep: list[DeepMask], shape: tuple[int, int], depth: int,
               max_iterations: int) -> list:
    """Multigrid-PCG for the masks of `deep`, several at a time in step (`solve_in_step`):
    [(solutions, iterations), ...]. As many as hold `PIXELS_IN_STEP` pixels together: the
    fine grids of masks in step take turns in the core's cache, and at 224×224 7 masks in
    step ran slower than one at a time (at 112×112, faster)."""
    count = max(1, PIXELS_IN_STEP // (shape[0] * shape[1]))
    return [result for start in range(0, len(deep), count)
            for result in solve_in_step(deep[start:start + count], shape, depth,
                                        max_iterations)]


PIXELS_IN_STEP = 100_000  # 7 masks of 112×112 in step, 1 of 224×224


def solve_in_step(deep: list[DeepMask], shape: tuple[int, int], depth: int,
                  max_iterations: int) -> list:
    """Multigrid-PCG for every mask of `deep` in step (`drive`): each one's grids down to
    `depth` on its box, the coarser ones stacked on the image's (`shape`)."""
    grid = shape
    for _ in range(depth):
        grid = coarse_size(grid[0]), coarse_size(grid[1])
    coefficients = np.zeros((len(deep), 9, *grid), dtype=deep[0].b.dtype)
    origins, solvers = [], []
    for i, mask in enumerate(deep):
        levels = [mask.level]
        stencils = galerkin(mask.level, mask.level.inside.shape[-2:])
        while len(levels) < depth:
            levels.append(StencilLevel(stencils))
            stencils = galerkin(levels[-1], stencils.shape[-2:])
        origin = mask.box[1].start >> depth, mask.box[2].start >> depth
        coefficients[(i, slice(None), *grid_part(origin, stencils.shape))] = stencils[0]
        origins.append(origin)
        solvers.append(multigrid_pcg(levels, mask.b, mask.v, mask.target, max_iterations))
    return drive(solvers, CoarseGrids.build(coefficients), origins)


def grid_part(origin: tuple[int, int], shape: tuple[int, ...]) -> tuple[slice, slice]:
    """The part of the image's first coarse grid that a box's own coarse grid covers."""
    return (slice(origin[0], origin[0] + shape[-2]), slice(origin[1], origin[1] + shape[-1]))


def impute(images: np.ndarray, removed: np.ndarray, noise: float = 0.01,
           rng: np.random.Generator | None = None, tolerance: float = 1e-5) -> np.ndarray:
    """Fill `removed` pixels (B, H, W bool) of `images` (B, C, H, W) by noisy linear
    imputation: the solution of the neighbour-mean system plus N(0, noise²) noise.

    The system is singular only when every pixel of an image is removed; such an image is
    filled with noise around zero instead."""
    x = np.asarray(images)
    # float32 halves the traffic
    x = x if x.dtype == np.float64 else x.astype(np.float32, copy=False)
    unknown = np.asarray(removed, dtype=bool)[:, None]  # (B, 1, H, W), shared by channels
    v = solve(x, unknown, tolerance)
    rng = rng or np.random.default_rng(0)
    # float32 draws: half the time of float64 ones, and far finer than the noise's scale
    draws = rng.standard_normal(v.shape, dtype=v.dtype if v.dtype == np.float64
                                else np.float32)
    draws *= noise
    v += draws
    return keep_known(v, x, unknown).astype(np.float32, copy=False)


def keep_known(v: np.ndarray, x: np.ndarray, unknown: np.ndarray) -> np.ndarray:
    """`v` on the unknown pixels, `x` elsewhere: np.where(unknown, v, x), as v ⊙ unknown +
    x ⊙ known in place where x is finite (x ⊙ 0 is then 0, and both sums exact): four
    vectorised passes took a quarter of np.where's time (1 ms per image of ROAD's 7
    fractions at 112×112)."""
    if not np.isfinite(x).all():
        return np.where(unknown, v, x)
    v *= unknown
    v += x * ~unknown
    return v


def road(forward: Forward, x: np.ndarray, heats: np.ndarray, targets: np.ndarray,
         fractions: Sequence[float] = ROAD_FRACTIONS, order: str = "morf",
         rank: str = "signed", noise: float = 0.01, batch_size: int = 64,
         seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """((N, F) target-class probability, (N, F) accuracy) after imputing the most (`morf`) or
    least (`lerf`) relevant fraction of pixels. Accuracy is 1 where the model still predicts
    the target (by default its own original prediction)."""
    if order not in ("lerf", "morf"):
        raise ValueError(f"order must be lerf or morf, got '{order}'")
    n, _, h, w = x.shape
    counts = np.rint(np.asarray(fractions, dtype=np.float64) * h * w).astype(np.int64)

    def imputed(i: int) -> np.ndarray:
        """Image i at every fraction, with noise from its own (seed, i) stream, so the
        result does not depend on which thread draws first."""
        ranked = pixel_order(heats[i], rank, seed + i)
        if order == "lerf":
            ranked = ranked[::-1]
        position = removal_positions(ranked).reshape(h, w)
        removed = position[None] < counts[:, None, None]
        return impute(np.repeat(x[i][None], len(counts), axis=0), removed, noise,
                      np.random.default_rng([seed, i]))

    # Imputed on forward_stacks' batch-building thread, ahead of the forward passes. Not on
    # a second one: the solver's vectors are sized for the core's cache, a few µs per numpy
    # call, and two threads handing the GIL over at every call ran slower than one (2 images
    # of 112×112 with Grad-CAM maps: 125 ms on two threads, 97 ms on one).
    def stacks():
        for i in range(n):
            yield imputed(i)

    logits = forward_stacks(forward, stacks(), batch_size, total=n * len(counts))
    probs = np.stack([softmax(lg)[:, targets[i]] for i, lg in enumerate(logits)])
    accuracy = np.stack([(lg.argmax(axis=1) == targets[i]).astype(np.float64)
                         for i, lg in enumerate(logits)])
    return probs, accuracy
