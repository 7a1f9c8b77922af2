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

from .perturbation import Forward, fill_values, forward_stacks
from .similarity import pearson

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
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(subsets (N, len(ns), samples, H*W) bool, drops (N, len(ns), samples)): the target
    logit's drop f_c(x) - f_c(x_S) for each image and subset."""
    n_images, channels, h, w = x.shape
    value = fill_values(fill, channels)
    masks = np.stack([subsets(h * w, ns, samples, seed + i) for i in range(n_images)])

    def stacks():
        yield x
        for i in range(n_images):
            removed = masks[i].reshape(-1, 1, h, w)
            yield np.where(removed, value[None], x[i][None])

    logits = forward_stacks(forward, stacks(), batch_size)
    rows = np.arange(n_images)
    original = logits[0][rows, targets].astype(np.float64)
    after = np.stack([lg[:, targets[i]] for i, lg in enumerate(logits[1:])]).astype(np.float64)
    drops = original[:, None] - after
    return masks, drops.reshape(n_images, len(ns), samples)


def sensitivity_n(pixel_attributions: np.ndarray, masks: np.ndarray,
                  drops: np.ndarray) -> np.ndarray:
    """(N, len(ns)) Pearson correlations, from per-pixel attributions (N, H, W) and the
    subsets and drops of `output_drops`. NaN where either side is constant."""
    flat = pixel_attributions.reshape(len(pixel_attributions), -1).astype(np.float64)
    sums = np.einsum("nksp,np->nks", masks, flat)
    return np.array([[pearson(sums[i, k], drops[i, k]) for k in range(drops.shape[1])]
                     for i in range(drops.shape[0])])
