"""ROAD's imputation solver (neighbour_mean.solve) against the Jacobi-PCG solver it replaced.

    python benchmarks/bench_road.py [--sizes 112 224] [--rounds 3]

For random heat maps (scattered removed pixels) and smooth ones (large holes, as real
attribution maps give), ROAD's 7 fractions of 2 images × 3 channels are solved by both
solvers in the same process, alternately, at the default tolerance (1e-5). Printed: each
solver's median time, the largest difference between their solutions and to a float64
reference solved at 1e-11, and the iterations per fraction (the most over images and
channels; the new solver's Jacobi and multigrid steps apart, "-" where a path was not taken).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onnxpath.evaluate import multigrid, neighbour_mean, road  # noqa: E402
from onnxpath.evaluate.perturbation import pixel_order, removal_positions  # noqa: E402


def jacobi_solve(x: np.ndarray, unknown: np.ndarray, tolerance: float = 1e-5,
                 max_iterations: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """The replaced solver, kept here as the reference: Jacobi-preconditioned CG on every
    system, from the push-pull guess; (solution, iterations per system)."""
    known = ~unknown
    shape = np.broadcast_shapes(x.shape, unknown.shape)
    h, w = shape[-2:]
    inside = np.broadcast_to(unknown, shape).reshape(-1, h, w).astype(x.dtype)
    diagonal = multigrid.neighbour_sum(np.ones((h, w), dtype=x.dtype))
    b = inside * multigrid.neighbour_sum(np.where(known, x, 0.0).astype(x.dtype)).reshape(-1, h, w)

    def apply(v, inside):
        out = diagonal * v
        out -= multigrid.neighbour_sum(v)
        out *= inside
        return out

    solution = inside * neighbour_mean.pyramid_fill(x, known).astype(x.dtype).reshape(-1, h, w)
    iterations = np.full(len(solution), max_iterations)
    live = np.arange(len(solution))
    v = solution
    r = b - apply(v, inside)
    z = r / diagonal
    p = z.copy()
    rz = multigrid.dot(r, z)
    target = tolerance * np.sqrt(multigrid.dot(b, b))
    for iteration in range(max_iterations):
        active = (np.sqrt(multigrid.dot(r, r)) > target)[:, 0, 0]
        if not active.all():
            solution[live[~active]] = v[~active]
            iterations[live[~active]] = iteration
            if not active.any():
                return solution.reshape(shape), iterations
            live, v, r, p, rz, target, inside = (a[active] for a in (live, v, r, p, rz, target,
                                                                     inside))
        ap = apply(p, inside)
        pap = multigrid.dot(p, ap)
        alpha = np.where(pap > 0, rz / np.where(pap > 0, pap, 1.0), 0.0).astype(x.dtype)
        v += alpha * p
        r -= alpha * ap
        z = r / diagonal
        rz_new = multigrid.dot(r, z)
        beta = np.where(rz > 0, rz_new / np.where(rz > 0, rz, 1.0), 0.0).astype(x.dtype)
        p *= beta
        p += z
        rz = rz_new
    solution[live] = v
    return solution.reshape(shape), iterations


def smooth_heat(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Three Gaussian bumps: a heat map whose top fractions are a few large blobs."""
    rows, cols = np.mgrid[:h, :w]
    heat = np.zeros((h, w))
    for _ in range(3):
        cy, cx, s = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(5, 25) * h / 112
        heat += rng.uniform(0.5, 1) * np.exp(-((rows - cy) ** 2 + (cols - cx) ** 2) / (2 * s * s))
    return heat


def removal_masks(heat: np.ndarray) -> np.ndarray:
    """ROAD's removed pixels for each of its fractions (MoRF on the signed heat map)."""
    h, w = heat.shape
    counts = np.rint(np.asarray(road.ROAD_FRACTIONS) * h * w).astype(int)
    position = removal_positions(pixel_order(heat, "signed", 0)).reshape(h, w)
    return position[None] < counts[:, None, None]


def workload(size: int, kind: str, rng: np.random.Generator):
    """(images, removed): 2 smooth-ish images, each repeated for ROAD's 7 fractions."""
    images = rng.standard_normal((2, 3, size, size))
    images = (np.cumsum(np.cumsum(images, -1), -2) / 30).astype(np.float32)
    heats = [rng.standard_normal((size, size)) if kind == "random"
             else smooth_heat(size, size, rng) for _ in range(2)]
    removed = np.concatenate([removal_masks(heat) for heat in heats])[:, None]
    return np.repeat(images, len(road.ROAD_FRACTIONS), axis=0), removed


def per_fraction(counts: np.ndarray) -> str:
    """The most iterations per fraction over images and channels ("-" where none ran)."""
    most = counts.reshape(2, len(road.ROAD_FRACTIONS), -1).max(axis=(0, 2))
    return " ".join(f"{c:3d}" if c > 0 else "  -" for c in most)


def bench(size: int, kind: str, rounds: int) -> None:
    x, removed = workload(size, kind, np.random.default_rng(size))
    reference = neighbour_mean.solve(x.astype(np.float64), removed, tolerance=1e-11)
    old_times, new_times = [], []
    for _ in range(rounds + 1):  # the first round warms up and is not counted
        start = time.perf_counter()
        old, old_counts = jacobi_solve(x, removed)
        old_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        new, jacobi_counts, multigrid_counts = neighbour_mean.solve_counted(x, removed)
        new_times.append(time.perf_counter() - start)
    old_ms, new_ms = (1e3 * statistics.median(t[1:]) for t in (old_times, new_times))
    print(f"{size:4d} {kind:6s}  old {old_ms:6.0f} ms  new {new_ms:5.0f} ms  "
          f"x{old_ms / new_ms:4.1f}  |new-old| {np.abs(new - old).max():.1e}  "
          f"|old-ref| {np.abs(old - reference).max():.1e}  "
          f"|new-ref| {np.abs(new - reference).max():.1e}")
    print(f"{'':12s}iterations per fraction {road.ROAD_FRACTIONS}:")
    print(f"{'':14s}old Jacobi      {per_fraction(old_counts)}")
    print(f"{'':14s}new Jacobi      {per_fraction(jacobi_counts)}")
    print(f"{'':14s}new multigrid   {per_fraction(multigrid_counts)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[112, 224])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print("2 images x 7 fractions x 3 channels, float32, tolerance 1e-5; "
          "ref: float64 solution at 1e-11")
    for size in args.sizes:
        for kind in ("random", "smooth"):
            bench(size, kind, args.rounds)


if __name__ == "__main__":
    main()
