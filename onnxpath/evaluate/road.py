"""ROAD (Rong et al. 2022): remove pixels, fill them by noisy linear imputation, and measure
the model without retraining.

Each removed pixel must equal the weighted mean of its 8 neighbours (1/6 for edge neighbours,
1/12 for diagonal ones; neighbours outside the image drop out). Known neighbours move to the
right-hand side, which leaves one sparse, symmetric, diagonally dominant system per image
(shared by its channels). ROAD's authors solve it with scipy's `spsolve`; scipy is not a
runtime dependency, so this module runs Jacobi-preconditioned conjugate gradients in numpy,
vectorised over every image, fraction and channel at once, to a relative residual of
`tolerance`. The tests compare the result with `spsolve`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .perturbation import Forward, forward_stacks, pixel_order, removal_positions, softmax

ROAD_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.9)
# Separable [1, 2, 1] ⊗ [1, 2, 1] / 12 gives the stencil's 1/12 corners and 1/6 edges, plus a
# centre of 4/12 that `neighbour_sum` takes back out.
_TAPS = np.array([1.0, 2.0, 1.0]) / np.sqrt(12.0)


def neighbour_sum(v: np.ndarray) -> np.ndarray:
    """Σ_n w_n v[p + n] over the 8 neighbours of every pixel (last two axes), zero outside."""
    out = v
    for axis in (-2, -1):
        widths = [(0, 0)] * out.ndim
        widths[axis] = (1, 1)
        p = np.pad(out, widths)
        length = out.shape[axis]
        out = (_TAPS[0] * np.take(p, np.arange(0, length), axis=axis)
               + _TAPS[1] * np.take(p, np.arange(1, length + 1), axis=axis)
               + _TAPS[2] * np.take(p, np.arange(2, length + 2), axis=axis))
    return out - (4.0 / 12.0) * v


def impute(images: np.ndarray, removed: np.ndarray, noise: float = 0.01,
           rng: np.random.Generator | None = None, tolerance: float = 1e-6,
           max_iterations: int = 2000) -> np.ndarray:
    """Fill `removed` pixels (B, H, W bool) of `images` (B, C, H, W) by noisy linear
    imputation: the exact solution of the neighbour-mean system plus N(0, noise²) noise.

    The system is singular only when every pixel of an image is removed; such an image is
    filled with noise around zero instead."""
    x = np.asarray(images, dtype=np.float64)
    unknown = np.asarray(removed, dtype=bool)[:, None]  # (B, 1, H, W), shared by channels
    known = ~unknown
    diagonal = neighbour_sum(np.ones(unknown.shape[-2:]))  # Σ of in-image neighbour weights
    b = np.where(unknown, neighbour_sum(np.where(known, x, 0.0)), 0.0)

    def apply(v):
        return np.where(unknown, diagonal * v - neighbour_sum(v), 0.0)

    v = np.zeros_like(b)
    r = b.copy()
    z = r / diagonal
    p = z.copy()
    rz = (r * z).sum(axis=(-2, -1), keepdims=True)
    target = tolerance * np.sqrt((b * b).sum(axis=(-2, -1), keepdims=True))
    for _ in range(max_iterations):
        residual = np.sqrt((r * r).sum(axis=(-2, -1), keepdims=True))
        active = residual > target
        if not active.any():
            break
        ap = apply(p)
        pap = (p * ap).sum(axis=(-2, -1), keepdims=True)
        alpha = np.where(active & (pap > 0), rz / np.where(pap > 0, pap, 1.0), 0.0)
        v += alpha * p
        r -= alpha * ap
        z = r / diagonal
        rz_new = (r * z).sum(axis=(-2, -1), keepdims=True)
        beta = np.where(rz > 0, rz_new / np.where(rz > 0, rz, 1.0), 0.0)
        p = z + beta * p
        rz = rz_new
    rng = rng or np.random.default_rng(0)
    filled = v + noise * rng.standard_normal(v.shape)
    return np.where(unknown, filled, x).astype(np.float32)


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
    rng = np.random.default_rng(seed)

    def stacks():
        for i in range(n):
            ranked = pixel_order(heats[i], rank, seed + i)
            if order == "lerf":
                ranked = ranked[::-1]
            position = removal_positions(ranked).reshape(h, w)
            removed = position[None] < counts[:, None, None]
            yield impute(np.repeat(x[i][None], len(counts), axis=0), removed, noise, rng)

    logits = forward_stacks(forward, stacks(), batch_size)
    probs = np.stack([softmax(lg)[:, targets[i]] for i, lg in enumerate(logits)])
    accuracy = np.stack([(lg.argmax(axis=1) == targets[i]).astype(np.float64)
                         for i, lg in enumerate(logits)])
    return probs, accuracy
