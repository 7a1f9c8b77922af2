"""Sensitivity-n (Ancona et al. 2018): does the attribution summed over any n pixels predict
how much the target output drops when those n pixels are removed?

For each n, `samples` random pixel subsets S with |S| = n are drawn (seeded); the score is
the Pearson correlation, over the subsets, between Σ_{i∈S} R_i and f_c(x) - f_c(x with S
removed), with f_c the target logit. The subsets and the forward runs depend on the image and
n only, not on the method, so one set of forward runs serves every method.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from onnxpath.evaluate.perturbation import Forward, fill_values, forward_stacks
from onnxpath.evaluate.similarity import pearson

SENSITIVITY_NS = (1, 4, 16, 64, 256, 1024)


def subsets(pixels: int, ns: Sequence[int], samples: int, seed: int) -> np.ndarray:
    """(len(ns), samples, pixels) bool: row [k, s] marks subset s of size ns[k]."""
    rng = np.random.default_rng(seed)
    chosen = np.zeros((len(ns), samples, pixels), dtype=bool)
    for k, n in enumerate(ns):
        if not 1 <= n <= pixels:
            raise ValueError(f"sensitivity-n: n={n} is outside 1..{pixels} pixels")
        for s in range(samples):
            chosen[k, s, rng.choice(pixels, size=n, replace=False)] = True
    return chosen


def output_drops(forward: Forward, x: np.ndarray, targets: np.ndarray,
                 ns: Sequence[int] = SENSITIVITY_NS, samples: int = 32,
                 fill: float | Sequence[float] = 0.0, batch_size: int = 64,
                 seed: int = 0) -> np.ndarray:
    """(N, len(ns), samples): the target logit's drop f_c(x) - f_c(x_S) for each image and
    subset. Subsets are redrawn from (seed + image index), never stored for all images."""
    n_images, channels, h, w = x.shape
    value = fill_values(fill, channels)

    def stacks():
        yield x
        for i in range(n_images):
            removed = subsets(h * w, ns, samples, seed + i).reshape(-1, 1, h, w)
            yield np.where(removed, value[None], x[i][None])

    logits = forward_stacks(forward, stacks(), batch_size)
    rows = np.arange(n_images)
    original = logits[0][rows, targets].astype(np.float64)
    after = np.stack([lg[:, targets[i]] for i, lg in enumerate(logits[1:])]).astype(np.float64)
    return (original[:, None] - after).reshape(n_images, len(ns), samples)


def sensitivity_n(pixel_attributions: np.ndarray, drops: np.ndarray, ns: Sequence[int],
                  seed: int = 0) -> np.ndarray:
    """(N, len(ns)) Pearson correlations, from per-pixel attributions (N, H, W) and the drops
    of `output_drops` (same `ns` and seed). NaN where either side is constant."""
    n_images, _, samples = drops.shape
    out = np.empty((n_images, len(ns)))
    for i in range(n_images):
        chosen = subsets(pixel_attributions[i].size, ns, samples, seed + i)
        sums = chosen @ pixel_attributions[i].ravel().astype(np.float64)  # (len(ns), samples)
        out[i] = [pearson(sums[k], drops[i, k]) for k in range(len(ns))]
    return out
