"""SLIC superpixels (Achanta et al. 2012) in numpy, so the runtime needs no scikit-image.

k-means over (channels, y, x) started from a regular grid of about `count` centres, each pixel
compared only with the centres within two grid steps of it; distance
d² = |c − c_k|² + (m / S)² |p − p_k|², with S the grid step and m the compactness, on channels
scaled to [0, 1]. Labels are made consecutive; tiny fragments are not merged (LIME and
KernelSHAP only need a partition, not a connected one).
"""

from __future__ import annotations

import math

import numpy as np


def slic(image: np.ndarray, count: int = 50, compactness: float = 10.0,
         iterations: int = 10) -> np.ndarray:
    """(H, W) integer labels for a (C, H, W) image."""
    channels, height, width = image.shape
    low, high = image.min(), image.max()
    colour = ((image - low) / (high - low if high > low else 1.0)).reshape(channels, -1).T
    step = max(1.0, math.sqrt(height * width / max(count, 1)))
    ys = np.arange(step / 2, height, step)
    xs = np.arange(step / 2, width, step)
    cy, cx = np.meshgrid(ys, xs, indexing="ij")
    centres_pos = np.stack([cy.ravel(), cx.ravel()], axis=1)
    yy, xx = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    pos = np.stack([yy.ravel(), xx.ravel()], axis=1).astype(np.float64)
    centres_col = colour[(np.clip(centres_pos[:, 0].astype(int), 0, height - 1) * width
                          + np.clip(centres_pos[:, 1].astype(int), 0, width - 1))]
    # Colour is in [0, 1] here, so the compactness is rescaled to that range (skimage's m = 10
    # for Lab in [0, 100] is m = 0.1 here).
    weight = (compactness / 100.0 / step) ** 2
    labels = np.zeros(len(pos), dtype=np.int64)
    for _ in range(iterations):
        spatial = ((pos[:, None, :] - centres_pos[None]) ** 2).sum(-1)
        near = np.abs(pos[:, None, :] - centres_pos[None]).max(-1) <= 2 * step
        colour_d = ((colour[:, None, :] - centres_col[None]) ** 2).sum(-1)
        distance = np.where(near, colour_d + weight * spatial, np.inf)
        labels = distance.argmin(axis=1)
        sizes = np.bincount(labels, minlength=len(centres_pos)).astype(np.float64)
        alive = sizes > 0
        for d in range(2):
            centres_pos[alive, d] = np.bincount(labels, pos[:, d], len(sizes))[alive] / \
                sizes[alive]
        for c in range(channels):
            centres_col[alive, c] = np.bincount(labels, colour[:, c], len(sizes))[alive] / \
                sizes[alive]
    _, consecutive = np.unique(labels, return_inverse=True)
    return consecutive.reshape(height, width)
