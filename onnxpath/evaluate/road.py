"""ROAD (Rong et al. 2022): remove pixels, fill them by noisy linear imputation, and measure
the model without retraining. The imputation solves one sparse linear system per image, mask
and channel (`neighbour_mean.py`) and adds N(0, noise²) noise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from onnxpath.evaluate.neighbour_mean import solve
from onnxpath.evaluate.perturbation import (
    Forward,
    blend,
    forward_stacks,
    pixel_order,
    removal_positions,
    softmax,
)

ROAD_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.9)


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
    # Noise on the removed pixels only, as ROAD's reference adds it: the draws on known ones
    # were thrown away (56% of the pixels of ROAD's 7 fractions on average; 2.5 -> 1.6 ms per
    # 112×112 image). float32 draws: half the time of float64 ones, far finer than the noise.
    positions = np.flatnonzero(np.broadcast_to(unknown, v.shape))
    draws = rng.standard_normal(positions.size, dtype=v.dtype if v.dtype == np.float64
                                else np.float32)
    draws *= noise
    flat = v.reshape(-1)  # a view: solve's result is contiguous
    flat[positions] += draws
    # v on the removed pixels, the image elsewhere (in place)
    return blend(unknown, v, x, out=v).astype(np.float32, copy=False)


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
