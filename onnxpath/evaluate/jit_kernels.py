"""Compiled kernels for ROAD's imputation solver (`neighbour_mean.py`, `multigrid.py`), used
when numba is installed (`pip install 'onnxpath[jit]'`); without it the solver runs in numpy.

Each step of the solver is a dozen or more numpy passes over a few hundred KB, each paying
numpy's per-call cost and a trip through the core's cache; a compiled loop reads its vectors
once. Compiled here: multigrid's four operations (the image's stencil, a coarse grid's
9-point stencils, restriction and prolongation) and the whole Jacobi-PCG iteration. ROAD's 7
fractions of a 112×112 image, one process, alternated (benchmarks/bench_forward.py's maps):
random maps 21.2 -> 16.6 ms, the model's Grad-CAM maps 26.3 -> 18.1 ms.

Results equal numpy's up to float32 rounding (sums run in another order), which moves the
imputations by ~1e-6, far inside the solver's tolerance and ROAD's noise (a Jacobi system
may take one step more or less). `ONNXPATH_NO_JIT=1` turns the kernels off. numba caches the
compiled code beside this file: a later process loads it in ~0.3 s instead of compiling for
~3 s (importing numba takes ~1 s, paid at the first imputation only).
"""

from __future__ import annotations

import math

import numpy as np

from onnxpath.compiled.kernel_set import KernelSet, compile_function


def _masked_product(p, centre, inside, rows, out):
    """out = inside ⊙ (centre ⊙ p − [1 2 1] ⊗ [1 2 1] ∗ p) on one h × w grid, zero outside it
    (`rows`: scratch): the system's product, scaled as `inside` and `centre` say (12 A for
    Jacobi-PCG; A itself with inside / 12, as `ImageLevel` keeps it)."""
    h, w = p.shape
    for i in range(h):
        for j in range(w):
            rows[i, j] = 2.0 * p[i, j]
        if i > 0:
            for j in range(w):
                rows[i, j] += p[i - 1, j]
        if i < h - 1:
            for j in range(w):
                rows[i, j] += p[i + 1, j]
    for i in range(h):  # the edges apart, so the inner loop has no branch
        for j in range(1, w - 1):
            both = 2.0 * rows[i, j] + rows[i, j - 1] + rows[i, j + 1]
            out[i, j] = (centre[i, j] * p[i, j] - both) * inside[i, j]
        for j in range(0, w, max(w - 1, 1)):  # the first and last column
            both = 2.0 * rows[i, j]
            if j > 0:
                both += rows[i, j - 1]
            if j < w - 1:
                both += rows[i, j + 1]
            out[i, j] = (centre[i, j] * p[i, j] - both) * inside[i, j]


def _image_product(v, centre, inside_twelfth, per):
    """out[k] = inside_twelfth[k // per] ⊙ (centre ⊙ v[k] − [1 2 1] ⊗ [1 2 1] ∗ v[k]) with
    zero outside the grid: `multigrid.ImageLevel.apply` on (S, h, w) systems."""
    count, h, w = v.shape
    out = np.empty_like(v)
    rows = np.empty((h, w), dtype=v.dtype)
    for k in range(count):
        _masked_product(v[k], centre, inside_twelfth[k // per], rows, out[k])
    return out


def _stencil_product(coefficients, v):
    """out[m, c] = Σ_d coefficients[m, d] ⊙ v[m, c] shifted by d, over the 9 offsets of
    `multigrid.STENCIL` (zero outside the grid): `multigrid.StencilLevel.apply`. Written per
    point, the offsets innermost: LLVM unrolls them and vectorises along the rows (a loop per
    offset over the grid ran at scalar speed)."""
    masks, count, h, w = v.shape
    out = np.empty_like(v)
    for m in range(masks):
        for c in range(count):
            for i in range(h):
                for j in range(w):
                    total = coefficients[m, 4, i, j] * v[m, c, i, j]
                    for dy in range(-1, 2):
                        if 0 <= i + dy < h:
                            for dx in range(-1, 2):
                                if (dy != 0 or dx != 0) and 0 <= j + dx < w:
                                    total += (coefficients[m, (dy + 1) * 3 + dx + 1, i, j]
                                              * v[m, c, i + dy, j + dx])
                    out[m, c, i, j] = total
    return out


def _restriction(fine):
    """Pᵀ of bilinear P, full weighting: each coarse point I takes fine[2I] and half of
    fine[2I ± 1] along each axis (`multigrid.restrict` on (S, h, w) systems)."""
    count, h, w = fine.shape
    ch, cw = h // 2 + 1, w // 2 + 1
    rows = np.zeros((ch, w), dtype=fine.dtype)
    out = np.empty((count, ch, cw), dtype=fine.dtype)
    for k in range(count):
        for i in range(ch):  # down the columns
            for j in range(w):
                rows[i, j] = fine[k, 2 * i, j] if 2 * i < h else 0.0
            if 2 * i - 1 >= 0:
                for j in range(w):
                    rows[i, j] += 0.5 * fine[k, 2 * i - 1, j]
            if 2 * i + 1 < h:
                for j in range(w):
                    rows[i, j] += 0.5 * fine[k, 2 * i + 1, j]
        for i in range(ch):  # along the rows
            for j in range(cw):
                total = rows[i, 2 * j] if 2 * j < w else 0.0
                if 2 * j - 1 >= 0:
                    total += 0.5 * rows[i, 2 * j - 1]
                if 2 * j + 1 < w:
                    total += 0.5 * rows[i, 2 * j + 1]
                out[k, i, j] = total
    return out


def _prolongation(coarse, h, w, inside, per):
    """Bilinear P onto an h × w grid, times inside[k // per]: `multigrid.prolong` on
    (S, ch, cw) systems."""
    count, ch, cw = coarse.shape
    rows = np.empty((h, cw), dtype=coarse.dtype)
    out = np.empty((count, h, w), dtype=coarse.dtype)
    for k in range(count):
        t = k // per
        for i in range(h):  # down the columns
            if i % 2 == 0:
                for j in range(cw):
                    rows[i, j] = coarse[k, i // 2, j]
            else:
                for j in range(cw):
                    rows[i, j] = 0.5 * (coarse[k, i // 2, j] + coarse[k, i // 2 + 1, j])
        for i in range(h):  # along the rows
            for j in range(w // 2):
                out[k, i, 2 * j] = rows[i, j] * inside[t, i, 2 * j]
                out[k, i, 2 * j + 1] = (0.5 * (rows[i, j] + rows[i, j + 1])
                                        * inside[t, i, 2 * j + 1])
            if w % 2:
                out[k, i, w - 1] = rows[i, w // 2] * inside[t, i, w - 1]
    return out


def _jacobi_pcg(b, v, inside, diagonal, target, max_iterations):
    """`neighbour_mean.jacobi_pcg`, one system after another, each in the core's cache: the
    same iteration (on 12 A, stopping on rᵀD⁻¹r), float64 step sizes and sums."""
    count, h, w = v.shape
    x = v.copy()
    iterations = np.full(count, -1)
    centre = 12.0 * diagonal + 4.0
    inverse = np.zeros((h, w), dtype=v.dtype)
    for i in range(h):
        for j in range(w):
            if inside[i, j] > 0:
                inverse[i, j] = inside[i, j] / (12.0 * diagonal[i, j])
    rows = np.empty((h, w), dtype=v.dtype)
    r = np.empty((h, w), dtype=v.dtype)
    z = np.empty((h, w), dtype=v.dtype)
    p = np.empty((h, w), dtype=v.dtype)
    ap = np.empty((h, w), dtype=v.dtype)
    for k in range(count):
        target2 = 12.0 * target[k] * target[k]  # 12 rᵀ(12 D)⁻¹r ≥ |r|²
        _masked_product(x[k], centre, inside, rows, ap)
        rz = 0.0
        for i in range(h):
            for j in range(w):
                r[i, j] = (12.0 * b[k, i, j] - ap[i, j]) * inside[i, j]
                z[i, j] = r[i, j] * inverse[i, j]
                p[i, j] = z[i, j]
                rz += float(r[i, j]) * float(z[i, j])
        for iteration in range(max_iterations + 1):
            if rz <= target2:
                iterations[k] = iteration
                break
            if iteration == max_iterations:
                break
            _masked_product(p, centre, inside, rows, ap)
            pap = 0.0
            for i in range(h):
                for j in range(w):
                    pap += float(p[i, j]) * float(ap[i, j])
            if not pap > 0:  # no positive curvature: leave it unconverged
                break
            alpha = rz / pap
            rz_new = 0.0
            for i in range(h):
                for j in range(w):
                    x[k, i, j] += alpha * p[i, j]
                    r[i, j] -= alpha * ap[i, j]
                    z[i, j] = r[i, j] * inverse[i, j]
                    rz_new += float(r[i, j]) * float(z[i, j])
            beta = rz_new / rz
            for i in range(h):
                for j in range(w):
                    p[i, j] = z[i, j] + beta * p[i, j]
            rz = rz_new
    return x, iterations


def _build(numba) -> dict:
    # _image_product and _jacobi_pcg call _masked_product: numba resolves it as a global when
    # it compiles a caller, so the global must be the compiled function by then
    python = getattr(_masked_product, "py_func", _masked_product)
    globals()["_masked_product"] = compile_function(numba, python)
    return {name: compile_function(numba, function) for name, function in (
        ("image", _image_product), ("stencil", _stencil_product),
        ("restriction", _restriction), ("prolongation", _prolongation),
        ("jacobi", _jacobi_pcg))}


KERNELS = KernelSet("ROAD's compiled solver kernels", _build)


def kernels() -> dict:
    """The compiled kernels by name (empty without numba): `compiled.KernelSet`."""
    return KERNELS.kernels()


def image_product(v: np.ndarray, centre: np.ndarray,
                  inside_twelfth: np.ndarray) -> np.ndarray | None:
    """`_image_product` for systems (…, h, w), with `inside_twelfth` broadcast to them; None
    without the kernels."""
    if not kernels():
        return None
    h, w = v.shape[-2:]
    systems = np.ascontiguousarray(v).reshape(-1, h, w)
    if centre.shape != (h, w):
        centre = np.broadcast_to(centre, (h, w))
    out = KERNELS.run("image", systems, np.ascontiguousarray(centre, dtype=v.dtype),
               *_grids(inside_twelfth, v.dtype, v.shape[:-2], h, w))
    return None if out is None else out.reshape(v.shape)


def _grids(a: np.ndarray, dtype, lead: tuple, h: int, w: int) -> tuple:
    """`a` (…, h, w), which broadcasts to systems `lead` × (h, w), as (grids (G, h, w), per):
    system k (flat) takes grids[k // per]. One grid for all, one per system, or one per
    leading index (a mask's grid for its C systems) need no copy."""
    own = (1,) * (len(lead) + 2 - a.ndim) + a.shape[:-2]
    shared = len(lead)
    while shared and own[shared - 1] == 1:
        shared -= 1
    if own[:shared] == tuple(lead[:shared]):
        grids, per = a.reshape(-1, h, w), math.prod(lead[shared:])
    else:
        grids, per = np.broadcast_to(a, (*lead, h, w)).reshape(-1, h, w), 1
    return np.ascontiguousarray(grids, dtype=dtype), per


def stencil_product(coefficients: np.ndarray, v: np.ndarray) -> np.ndarray | None:
    """`_stencil_product` of (M, 9, h, w) stencils and (M, C, h, w) systems; None without
    the kernels."""
    if not kernels():
        return None
    v = np.ascontiguousarray(v)
    return KERNELS.run("stencil", np.ascontiguousarray(coefficients, dtype=v.dtype), v)


def restriction(fine: np.ndarray) -> np.ndarray | None:
    """`_restriction` for systems (…, h, w); None without the kernels."""
    if not kernels():
        return None
    h, w = fine.shape[-2:]
    out = KERNELS.run("restriction", np.ascontiguousarray(fine).reshape(-1, h, w))
    return None if out is None else out.reshape(*fine.shape[:-2], *out.shape[-2:])


def prolongation(coarse: np.ndarray, shape: tuple[int, int],
                 inside: np.ndarray) -> np.ndarray | None:
    """`_prolongation` for systems (…, ch, cw) onto `shape`, times `inside` broadcast to
    them; None without the kernels."""
    if not kernels():
        return None
    h, w = shape
    systems = np.ascontiguousarray(coarse).reshape(-1, *coarse.shape[-2:])
    out = KERNELS.run("prolongation", systems, h, w,
               *_grids(inside, coarse.dtype, coarse.shape[:-2], h, w))
    return None if out is None else out.reshape(*coarse.shape[:-2], h, w)


def jacobi_pcg(b: np.ndarray, v: np.ndarray, inside: np.ndarray, diagonal: np.ndarray,
               target: np.ndarray, max_iterations: int) -> tuple | None:
    """`_jacobi_pcg` (see `neighbour_mean.jacobi_pcg` for the arguments); None without the
    kernels."""
    if not kernels():
        return None
    dtype = v.dtype
    return KERNELS.run("jacobi", np.ascontiguousarray(b, dtype=dtype), np.ascontiguousarray(v),
                np.ascontiguousarray(inside, dtype=dtype),
                np.ascontiguousarray(diagonal, dtype=dtype),
                np.ascontiguousarray(target, dtype=np.float64), int(max_iterations))
