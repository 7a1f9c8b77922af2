"""Multigrid for ROAD's neighbour-mean systems (`neighbour_mean.py`): the preconditioner of
conjugate gradients where a mask's holes are deep.

Jacobi's steps carry information one pixel at a time (a 60-pixel hole took ~300); one
symmetric V-cycle carries it across the image, and 4-5 conjugate-gradient steps from zero
suffice (4 on every Grad-CAM mask of benchmarks/bench_forward.py, with two coarse corrections
on the first shared grid). The coarse operators are Galerkin products Pᵀ A P (bilinear P
kept on removed pixels) as 9-point stencils, probed once per mask and shared by its
channels. The masks of a call run in step (`drive`): each on its box down to grids of
`neighbour_mean.SHARED_GRID` points, the coarser grids for all of them at once on the
image's, so that those grids' numpy calls, mostly overhead, serve 7 masks instead of one.
Small grids transfer by matrix products, larger ones by strided adds.
"""

from __future__ import annotations

import functools

import numpy as np

from onnxpath.evaluate import jit_kernels

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


# Multigrid's settings, measured on 112×112 and 224×224 attribution maps (benchmarks/bench_road.py).
DAMPING = 0.9  # damped-Jacobi smoothing weight (the stencil's D⁻¹A has eigenvalues up to 4/3)
COARSEST_PIXELS = 100  # coarsening stops at this many grid points, solved by a dense inverse
STENCIL = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]  # 9-point offsets; 4 = centre


def dot(a: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Per-system inner products over the last two axes of (S, H, W) arrays, in float64
    (see `system_dots`)."""
    return system_dots(a.reshape(len(a), -1), c.reshape(len(c), -1))[:, None, None]


def system_dots(a: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Per-system inner products of (count, length) arrays, in float64. They are summed in
    the vectors' type, by BLAS (several partial sums, so float32 loses ~1e-6 relative): a
    float64 accumulation of float32 vectors took 7 times as long."""
    return (a[:, None, :] @ c[:, :, None])[:, 0, 0].astype(np.float64)


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


# Grids of at most this many points per system transfer by matrix products: there a few
# strided numpy calls cost more than two small BLAS products (a 29×29 grid of 21 systems:
# restriction 33 -> 12 µs, prolongation 40 -> 18 µs); on a 112×112 box the strided adds win.
MATRIX_TRANSFER = 64 * 64


@functools.lru_cache(maxsize=256)
def interpolation(n: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation onto `n` fine points as a dense (n, coarse_size(n)) matrix, and
    its transpose, both contiguous, in the vectors' type (a float64 matrix would promote)."""
    matrix = np.zeros((n, coarse_size(n)), dtype=dtype)
    points = np.arange(n)
    matrix[points, points // 2] = np.where(points % 2 == 0, 1.0, 0.5)
    matrix[points[1::2], points[1::2] // 2 + 1] = 0.5
    return matrix, np.ascontiguousarray(matrix.T)


def prolong(coarse: np.ndarray, shape: tuple[int, int], inside: np.ndarray) -> np.ndarray:
    """Bilinear interpolation, kept on the unknown points (`inside`) of the finer grid."""
    compiled = jit_kernels.prolongation(coarse, shape, inside)
    if compiled is not None:
        return compiled
    if shape[0] * shape[1] <= MATRIX_TRANSFER:
        rows, _ = interpolation(shape[0], coarse.dtype)
        _, cols_t = interpolation(shape[1], coarse.dtype)
        fine = rows @ coarse @ cols_t
    else:
        fine = prolong_axis(prolong_axis(coarse, shape[0], -2), shape[1], -1)
    fine *= inside
    return fine


def restrict(fine: np.ndarray) -> np.ndarray:
    """Pᵀ: full weighting of a residual that is already zero off the unknown points."""
    compiled = jit_kernels.restriction(fine)
    if compiled is not None:
        return compiled
    h, w = fine.shape[-2:]
    if h * w <= MATRIX_TRANSFER:
        _, rows_t = interpolation(h, fine.dtype)
        cols, _ = interpolation(w, fine.dtype)
        return rows_t @ fine @ cols
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
        compiled = jit_kernels.image_product(v, self.centre, self.inside_twelfth)
        if compiled is not None:
            return compiled
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

    def buffers(self, c: int, keep: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """The coefficients repeated for `c` systems per mask, flat (9, M·c·(h+2)·(w+2)),
        and the zero-padded input buffer (M, c, h+2, w+2) of the product, built once (kept
        unless `keep` is false, as for `galerkin`'s one product of 9 probes): a broadcast
        over the systems made every multiply twice as slow, even counting the copy for one
        product (a 45×49 grid's 9 probes: 133 µs broadcast, 89 µs repeated)."""
        if c in self.flat:
            return self.flat[c]
        coefficients = np.repeat(self.padded_coefficients, c, axis=2)
        made = (coefficients.reshape(9, -1),
                np.zeros(coefficients.shape[1:], dtype=coefficients.dtype))
        if keep:
            self.flat[c] = made
        return made

    def apply(self, v: np.ndarray, keep: bool = True) -> np.ndarray:
        compiled = jit_kernels.stencil_product(self.coefficients, v)
        if compiled is not None:
            return compiled
        m, c, h, w = v.shape
        coefficients, padded = self.buffers(c, keep)
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
    size = -(-max(shape) // 64) * 64
    fine = probe_pattern(size, np.dtype(level.inside.dtype))[:, :shape[0], :shape[1]]
    if level.inside.ndim == 4:  # (a stencil level's masks: the same probes for each)
        fine = np.broadcast_to(fine, (len(level.inside), 9, *shape))
    fine = fine * level.inside
    probes = restrict(level.apply(fine, keep=False) if isinstance(level, StencilLevel)
                      else level.apply(fine))
    return probes.reshape(-1, 9 * h * w)[:, probe_index(h, w)]


@functools.lru_cache(maxsize=8)
def probe_pattern(size: int, dtype: np.dtype) -> np.ndarray:
    """`galerkin`'s 9 probes interpolated onto a size × size grid (not yet kept on removed
    pixels), cached: the probes repeat every 3 coarse points, so a grid's interpolated probes
    are this pattern's top-left corner, and each mask's galerkin skips their interpolation
    (9 systems on its box; 0.1 ms per mask on a 90×96 box)."""
    h = w = coarse_size(size)
    e = np.zeros((3, 3, h, w), dtype=dtype)
    for cy in range(3):
        for cx in range(3):
            e[cy, cx, cy::3, cx::3] = 1
    pattern = prolong_axis(prolong_axis(e.reshape(9, h, w), size, -2), size, -1)
    pattern.flags.writeable = False
    return pattern


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


# The first shared grid corrects twice from the coarser ones, smoothing after each (a W at
# that level; still symmetric: smoothing, correction, smoothing, correction, smoothing). On
# Grad-CAM maps it brought every system to 4 multigrid-PCG steps (188 -> 168 steps on
# bench_forward's 2 images, the same as three corrections).
FIRST_COARSE_CORRECTIONS = 2


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
        """The cycle below the fine grid, on restricted residuals (M, C, h, w): a V, but for
        `FIRST_COARSE_CORRECTIONS` at the first shared grid."""
        if depth == len(self.levels):
            return self.coarsest.solve(r)
        level = self.levels[depth]
        x = r * level.damped_inverse
        for _ in range(FIRST_COARSE_CORRECTIONS if depth == 0 else 1):
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
    backwards = False
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
        # The masks take turns in the opposite order each round: the last ones of a round
        # start the next while their vectors are still in the core's cache.
        order = list(enumerate(live))
        backwards = not backwards
        for i, k in reversed(order) if backwards else order:
            try:
                requests[k] = solvers[k].send(corrections[(i, ..., *parts[i])])
            except StopIteration as finished:
                results[k] = finished.value
                del requests[k]
    return results


def grid_part(origin: tuple[int, int], shape: tuple[int, ...]) -> tuple[slice, slice]:
    """The part of the image's first coarse grid that a box's own coarse grid covers."""
    return (slice(origin[0], origin[0] + shape[-2]), slice(origin[1], origin[1] + shape[-1]))
