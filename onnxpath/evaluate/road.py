"""ROAD (Rong et al. 2022): remove pixels, fill them by noisy linear imputation, and measure
the model without retraining.

Each removed pixel must equal the weighted mean of its 8 neighbours (1/6 for edge neighbours,
1/12 for diagonal ones; neighbours outside the image drop out). Known neighbours move to the
right-hand side, which leaves one sparse, symmetric, diagonally dominant system per image
(shared by its channels). ROAD's authors solve it with scipy's `spsolve`; scipy is not a
runtime dependency, so this module runs preconditioned conjugate gradients in numpy (float32
vectors, float64 step sizes), one mask at a time (the channels of an image and fraction
together: vectors small enough to stay in the core's cache) on the mask's bounding box, from
a push-pull first guess or, for a mask containing the previous one on the same image (ROAD's
fractions remove nested sets), from that one's solution, until each residual is below
`tolerance` (default 1e-5) times its right-hand side. Two preconditioners share the work,
chosen per mask before any iteration:

- Jacobi (the diagonal) where every removed pixel lies within `DEEP_HOLE` pixels of a known
  one, as with scattered pixels from a noisy heat map: a few cheap steps suffice there. It
  runs on a padded flat layout with preallocated buffers (`PaddedGrid`, `jacobi_pcg`).
- One multigrid V-cycle where holes are deeper, as with the large blobs a smooth attribution
  map removes: Jacobi's steps carry information one pixel at a time (a 60-pixel hole took
  ~300), the V-cycle's coarse grids carry it across the image, and 4-6 steps suffice. Its
  coarse operators are Galerkin products Pᵀ A P (bilinear P kept on removed pixels), built
  once per mask and shared by its channels; Jacobi systems not converged after
  `JACOBI_ITERATIONS` steps switch to it as well.

On 2 images × 7 fractions × 3 channels (benchmarks/bench_road.py, one thread) this takes
0.034 s on random and 0.098 s on smooth 112×112 maps (Jacobi-PCG alone: 0.074 s and 0.76 s),
0.17 s and 0.30 s at 224×224 (0.34 s and 5.1 s). The tests compare both paths with
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
DEEP_HOLE = 5  # a mask with a pixel farther than this from every known pixel goes to multigrid
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

    def jacobi(self, r: np.ndarray) -> np.ndarray:
        return r * self.inverse_diagonal

    def take(self, index: np.ndarray) -> ImageLevel:
        return ImageLevel(self.inside[index], self.diagonal)


class StencilLevel:
    """A coarse grid's Galerkin operator, a 9-point stencil per point (S, 9, h, w), in
    `STENCIL` order; points with a zero centre are not unknowns of this level."""

    def __init__(self, coefficients: np.ndarray):
        self.coefficients = coefficients
        n, _, h, w = coefficients.shape
        centre = coefficients[:, 4]
        self.inside = (centre > 0).astype(coefficients.dtype)
        self.inverse_diagonal = self.inside / np.where(centre > 0, centre, 1)
        self.damped_inverse = DAMPING * self.inverse_diagonal
        # The product runs on zero-padded grids flattened per system, where each neighbour is
        # a fixed offset: 8 contiguous multiply-adds instead of 8 strided ones. The padding's
        # coefficients are zero, so what lands there is zero.
        padded = np.zeros((n, 9, h + 2, w + 2), dtype=coefficients.dtype)
        padded[..., 1:-1, 1:-1] = coefficients
        self.flat_coefficients = padded.reshape(n, 9, -1)

    def apply(self, v: np.ndarray) -> np.ndarray:
        n, h, w = v.shape
        padded = np.zeros((n, h + 2, w + 2), dtype=v.dtype)
        padded[:, 1:-1, 1:-1] = v
        flat = padded.reshape(n, -1)
        out = self.flat_coefficients[:, 4] * flat
        first, end = w + 3, flat.shape[1] - w - 3  # the span holding every inner point
        term = np.empty((n, end - first), dtype=v.dtype)
        for k, (dy, dx) in enumerate(STENCIL):
            if k != 4:
                shift = dy * (w + 2) + dx
                np.multiply(self.flat_coefficients[:, k, first:end],
                            flat[:, first + shift:end + shift], out=term)
                out[:, first:end] += term
        return out.reshape(n, h + 2, w + 2)[:, 1:-1, 1:-1]

    def jacobi(self, r: np.ndarray) -> np.ndarray:
        return r * self.inverse_diagonal

    def take(self, index: np.ndarray) -> StencilLevel:
        taken = object.__new__(StencilLevel)  # sliced, not rebuilt: this runs on every compaction
        for name, value in vars(self).items():
            setattr(taken, name, value[index])
        return taken


def galerkin(level: ImageLevel | StencilLevel, shape: tuple[int, int]) -> np.ndarray:
    """The 9-point stencils of Pᵀ A P on the next coarser grid, probed: coarse unit vectors on
    one of 9 residue classes (mod 3 in each direction) never share a 3×3 neighbourhood, so
    each probe Pᵀ A P e yields, at every coarse point, its coupling to the one probed point
    next to it. Bilinear P and a 9-point A give a 9-point Pᵀ A P, so 9 probes give them all."""
    n, dtype = len(level.inside), level.inside.dtype
    if n > 1:  # the 9 probes of one mask run as one batch: one mask at a time
        return np.concatenate([galerkin(level.take(np.array([i])), shape) for i in range(n)])
    h, w = coarse_size(shape[0]), coarse_size(shape[1])
    e = np.zeros((3, 3, h, w), dtype=dtype)
    for cy in range(3):
        for cx in range(3):
            e[cy, cx, cy::3, cx::3] = 1
    e = e.reshape(9, h, w)
    probes = restrict(level.apply(prolong(e, shape, level.inside))).reshape(3, 3, 1, h, w)
    return probes.reshape(-1)[probe_index(h, w)][None]


@functools.lru_cache(maxsize=64)
def probe_index(h: int, w: int) -> np.ndarray:
    """Flat indices into `galerkin`'s probes (3, 3, h, w) of each point's 9 couplings (9, h,
    w): the neighbour at +(dy, dx) of point I has residue I + d. One gather, cached per
    grid shape."""
    row, col = np.arange(h)[:, None], np.arange(w)[None, :]
    return np.stack([(((row + dy) % 3) * 3 + (col + dx) % 3) * (h * w) + row * w + col
                     for dy, dx in STENCIL])


class CoarsestLevel:
    """The coarsest grid, solved by a dense inverse (float64) of its stencils' matrix."""

    def __init__(self, coefficients: np.ndarray | None = None, inverse: np.ndarray | None = None):
        self.inverse = self.dense_inverse(coefficients) if inverse is None else inverse

    @staticmethod
    def dense_inverse(coefficients: np.ndarray) -> np.ndarray:
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
        return np.linalg.inv(dense)

    def solve(self, r: np.ndarray) -> np.ndarray:
        flat = r.reshape(len(r), -1, 1).astype(np.float64)
        return (self.inverse @ flat).reshape(r.shape).astype(r.dtype)

    def take(self, index: np.ndarray) -> CoarsestLevel:
        return CoarsestLevel(inverse=self.inverse[index])


class Multigrid:
    """Systems preconditioned by one symmetric multigrid V-cycle: damped Jacobi before and
    after each coarse correction, bilinear P, R = Pᵀ, Galerkin coarse operators, an exact
    solve at the coarsest grid. Symmetric, so conjugate gradients can use it as is."""

    def __init__(self, levels: list, coarsest: CoarsestLevel, shapes: list[tuple[int, int]]):
        self.levels, self.coarsest, self.shapes = levels, coarsest, shapes

    @classmethod
    def build(cls, inside: np.ndarray, diagonal: np.ndarray | None = None) -> Multigrid:
        levels: list = [ImageLevel(inside, diagonal)]
        shapes = [inside.shape[-2:]]
        while True:
            coefficients = galerkin(levels[-1], shapes[-1])
            shapes.append(coefficients.shape[-2:])
            if coefficients.shape[-2] * coefficients.shape[-1] <= COARSEST_PIXELS:
                return cls(levels, CoarsestLevel(coefficients), shapes)
            levels.append(StencilLevel(coefficients))

    def apply(self, v: np.ndarray) -> np.ndarray:
        return self.levels[0].apply(v)

    def precondition(self, r: np.ndarray) -> np.ndarray:
        return self.cycle(0, r)

    def cycle(self, depth: int, r: np.ndarray) -> np.ndarray:
        if depth == len(self.levels):
            return self.coarsest.solve(r)
        level = self.levels[depth]
        x = r * level.damped_inverse
        residual = level.apply(x)
        np.subtract(r, residual, out=residual)
        x += prolong(self.cycle(depth + 1, restrict(residual)), self.shapes[depth],
                     level.inside)
        residual = level.apply(x)
        np.subtract(r, residual, out=residual)
        residual *= level.damped_inverse
        x += residual
        return x

    def take(self, index: np.ndarray) -> Multigrid:
        if len(self.levels[0].inside) == 1:  # one mask's, shared by all its systems
            return self
        return Multigrid([level.take(index) for level in self.levels],
                         self.coarsest.take(index), self.shapes)


class Jacobi:
    """Systems preconditioned by their diagonal: cheap steps, but each carries information one
    pixel, so a hole r pixels deep takes about 5 r of them."""

    def __init__(self, level: ImageLevel):
        self.level = level

    def apply(self, v: np.ndarray) -> np.ndarray:
        return self.level.apply(v)

    def precondition(self, r: np.ndarray) -> np.ndarray:
        return self.level.jacobi(r)

    def take(self, index: np.ndarray) -> Jacobi:
        return Jacobi(self.level.take(index))


def conjugate_gradients(systems: Jacobi | Multigrid, b: np.ndarray, v: np.ndarray,
                        target: np.ndarray, max_iterations: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Preconditioned CG on a batch of systems from `v`, until each residual norm is at most
    its `target`; (solutions, iterations each took, or -1 where it did not converge).

    A system that has converged leaves the batch (its values are final: conjugate gradients
    would only add zero steps to it), so the iterations cost what the systems still moving
    need."""
    solution = v.copy()
    live = np.arange(len(v))  # the systems still iterating, by index
    iterations = np.full(len(v), -1)
    v = v.copy()
    r = b - systems.apply(v)
    z = systems.precondition(r)
    p = z.copy()
    rz = dot(r, z)
    for iteration in range(max_iterations + 1):
        active = (np.sqrt(dot(r, r)) > target)[:, 0, 0]
        if not active.all():  # the converged keep their values; the rest go on, compacted
            solution[live[~active]] = v[~active]
            iterations[live[~active]] = iteration
            if not active.any():
                return solution, iterations
            live, v, r, p, rz, target = (a[active] for a in (live, v, r, p, rz, target))
            systems = systems.take(active)
        if iteration == max_iterations:
            break
        ap = systems.apply(p)
        pap = dot(p, ap)
        # Step sizes from float64 reductions, applied in the vectors' own type: a float64
        # product of a float32 vector costs four times a float32 one.
        alpha = np.where(pap > 0, rz / np.where(pap > 0, pap, 1.0), 0.0).astype(v.dtype)
        v += alpha * p
        r -= alpha * ap
        z = systems.precondition(r)
        rz_new = dot(r, z)
        beta = np.where(rz > 0, rz_new / np.where(rz > 0, rz, 1.0), 0.0).astype(v.dtype)
        p *= beta
        p += z
        rz = rz_new
    solution[live] = v
    return solution, iterations


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


def crop_around(mask: np.ndarray) -> tuple[slice, slice]:
    """The unknown pixels' bounding box grown by one pixel (their known neighbours): the
    system of a mask involves nothing outside it."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    return (slice(max(rows[0] - 1, 0), min(rows[-1] + 2, h)),
            slice(max(cols[0] - 1, 0), min(cols[-1] + 2, w)))


# Nested masks on one image start from the previous mask's solution: on ROAD's fractions of
# random maps this saved 3 of 71 Jacobi steps per image (none on multigrid's).
WARM_START = True


def solve(x: np.ndarray, unknown: np.ndarray, tolerance: float = 1e-5,
          max_iterations: int = 2000) -> np.ndarray:
    """Values of the `unknown` pixels (zero elsewhere) solving the neighbour-mean system, one
    system per image and channel, each until its residual is below `tolerance` × its
    right-hand side (see `solve_counted`)."""
    return solve_counted(x, unknown, tolerance, max_iterations)[0]


def solve_counted(x: np.ndarray, unknown: np.ndarray, tolerance: float = 1e-5,
                  max_iterations: int = 2000, deep_hole: int = DEEP_HOLE,
                  jacobi_iterations: int = JACOBI_ITERATIONS
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`solve`, plus each system's Jacobi-PCG and multigrid-PCG iteration counts (flat over
    the leading axes; -1 where a phase did not converge, 0 where it was not run).

    Systems are solved one mask at a time (the channels of an image and fraction together:
    their vectors fit the core's cache), on the mask's bounding box. Masks with a hole deeper
    than `deep_hole` pixels go straight to multigrid-PCG; the others run Jacobi-PCG, and
    those still unconverged after `jacobi_iterations` continue from there with multigrid.
    A mask that contains the previous one, on the same image, starts from that one's
    solution (ROAD's fractions remove nested sets)."""
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
    previous = None
    for m, mask in enumerate(masks):
        systems = np.flatnonzero(mask_of == m)
        if not len(systems) or not mask.any():
            continue
        box = (slice(None), *crop_around(mask))
        image, inside = values[systems][box], mask[box[1:]]
        guess = None
        if WARM_START and previous is not None:
            last_systems, last_mask = previous
            if (len(last_systems) == len(systems) and not (last_mask & ~mask).any()
                    and np.array_equal(values[last_systems], values[systems])):
                filled = np.where(last_mask, solution[last_systems], values[systems])[box]
                guess = pyramid_fill(filled, np.broadcast_to(~inside | last_mask[box[1:]],
                                                              filled.shape))
        if guess is None:
            guess = pyramid_fill(image, np.broadcast_to(~inside, image.shape))
        v, jacobi_counts[systems], multigrid_counts[systems] = solve_mask(
            image, inside, diagonal[box[1:]], guess, tolerance, max_iterations, deep_hole,
            jacobi_iterations)
        solution[(systems, *box[1:])] = v
        previous = systems, mask
    return solution.reshape(shape), jacobi_counts, multigrid_counts


def solve_mask(image: np.ndarray, mask: np.ndarray, diagonal: np.ndarray, guess: np.ndarray,
               tolerance: float, max_iterations: int, deep_hole: int, jacobi_iterations: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The systems of one mask (its channels, count×h×w on the mask's box): solutions,
    Jacobi-PCG and multigrid-PCG iteration counts."""
    inside = mask.astype(image.dtype)
    b = inside * neighbour_sum(np.where(mask, 0.0, image).astype(image.dtype))
    v = inside * guess.astype(image.dtype)
    target = tolerance * np.sqrt(system_dots(b.reshape(len(b), -1), b.reshape(len(b), -1)))
    count = len(image)
    jacobi_counts = np.zeros(count, dtype=int)
    rest = np.ones(count, dtype=bool)
    if not has_deep_hole(mask[None], deep_hole)[0]:
        v, jacobi_counts = jacobi_pcg(b, v, inside, diagonal, target,
                                      min(jacobi_iterations, max_iterations))
        rest = jacobi_counts < 0
    multigrid_counts = np.zeros(count, dtype=int)
    if rest.any():
        # one hierarchy, broadcast over the channels: not a copy per channel
        hierarchy = Multigrid.build(inside[None], diagonal)
        v = np.ascontiguousarray(v)
        v[rest], multigrid_counts[rest] = conjugate_gradients(
            hierarchy, b[rest], v[rest], target[rest, None, None], max_iterations)
    return v, jacobi_counts, multigrid_counts


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
    return np.where(unknown, v, x).astype(np.float32, copy=False)


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
