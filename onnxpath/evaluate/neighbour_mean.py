"""ROAD's linear imputation as a linear solve: each removed pixel equals the weighted mean of
its 8 neighbours (1/6 for edge neighbours, 1/12 for diagonal ones; neighbours outside the
image drop out). Known neighbours move to the right-hand side, which leaves one sparse,
symmetric, diagonally dominant system per image and mask (shared by its channels). ROAD's
authors solve it with scipy's `spsolve`; scipy is not a runtime dependency, so this module
runs preconditioned conjugate gradients in numpy (float32 vectors, float64 step sizes;
compiled where numba is installed: Jacobi-PCG and multigrid's operations, `jit_kernels.py`) on
each mask's bounding box, until each residual is below `tolerance` (default 1e-5) times its
right-hand side. Two preconditioners share the work, chosen per mask before any iteration:

- Jacobi (the diagonal) where every removed pixel lies within `DEEP_HOLE` pixels of a known
  one, as with scattered pixels from a noisy heat map: a few cheap steps suffice there. It
  runs one mask at a time (the channels of an image and fraction together: vectors small
  enough to stay in the core's cache), on a padded flat layout with preallocated buffers
  (`PaddedGrid`, `jacobi_pcg`), from a push-pull first guess or, for a mask containing the
  previous one on the same image (ROAD's fractions remove nested sets), from that one's
  solution.
- One multigrid V-cycle (`multigrid.py`) where holes are deeper, as with the large blobs a
  smooth attribution map removes. Jacobi systems not converged after `JACOBI_ITERATIONS`
  steps switch to it as well.

On 2 images × 7 fractions × 3 channels (benchmarks/bench_road.py, one core) this takes
0.034 s on random and 0.055 s on smooth 112×112 maps (Jacobi-PCG alone: 0.074 s and 0.58 s),
0.15 s and 0.21 s at 224×224 (0.33 s and 5.4 s); on the Grad-CAM maps of
benchmarks/bench_forward.py, 24-27 ms per 112×112 image (ROAD's whole imputation, ranking
and noise included, ~30 ms). The tests compare both paths with
`spsolve`: within 1e-5 at a tight tolerance, and within 1e-3 at the default one, far below the
imputation noise (std 0.01).
"""

from __future__ import annotations

import numpy as np

from onnxpath.evaluate import jit_kernels
from onnxpath.evaluate.multigrid import (
    CoarseGrids,
    ImageLevel,
    StencilLevel,
    coarse_size,
    dot,
    drive,
    galerkin,
    grid_part,
    multigrid_pcg,
    neighbour_sum,
    system_dots,
)


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


# A mask with a pixel farther than this from every known pixel goes to multigrid. At 6, the
# 90% fraction of a random 112×112 map (holes 6 deep) stays with Jacobi-PCG: 41 steps, 3 ms
# per image less than multigrid's 5 and its set-up.
DEEP_HOLE = 6
JACOBI_ITERATIONS = 60  # Jacobi-PCG systems still unconverged after this many switch too


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


def jacobi_pcg(b: np.ndarray, v: np.ndarray, inside: np.ndarray, diagonal: np.ndarray,
               target: np.ndarray, max_iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """Jacobi-PCG on systems sharing one mask (`inside`, h×w; b and v: count×h×w), until each
    residual norm is at most its `target`; (solutions, iterations each took, or -1).

    It runs on 12 A (integer stencil weights) in `PaddedGrid`'s layout with preallocated
    buffers: 13 passes over the vectors per step. The product is left unmasked (the
    preconditioner masks what it passes on), and the stopping test reuses rᵀD⁻¹r, an upper
    bound of |r|² (every diagonal is at most 1), so no further reduction is needed. A system
    that has converged takes zero steps from then on: its values are final, and do not depend
    on the other systems of the batch. With numba, `jit_kernels.jacobi_pcg` runs the same
    iteration compiled."""
    compiled = jit_kernels.jacobi_pcg(b, v, inside, diagonal, target, max_iterations)
    if compiled is not None:
        return compiled
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
