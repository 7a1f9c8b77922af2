"""How alike two attribution maps are: Spearman rank correlation, SSIM and HOG correlation.

These are the sanity check's measures (Adebayo et al. 2018, as run by the pathway paper's
authors). They are written in numpy because scipy and scikit-image are not runtime
dependencies; the tests check them against scipy and against slow loop-based references.
"""

from __future__ import annotations

import numpy as np


def rankdata(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their average rank (scipy's `method="average"`). Ties matter:
    Grad-CAM and ReLU-clipped maps hold many exact zeros."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(flat, kind="stable")
    sorted_values = flat[order]
    starts = np.r_[True, sorted_values[1:] != sorted_values[:-1]]
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    counts = np.diff(np.r_[first, len(flat)])
    average = first + (counts + 1) / 2.0  # mean of positions first+1 .. first+count
    ranks = np.empty_like(flat)
    ranks[order] = average[group]
    return ranks


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; NaN when either side is constant (there is nothing to correlate)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    a = a - a.mean()
    b = b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    if denom == 0 or not np.isfinite(denom):
        return float("nan")
    return float(np.clip((a * b).sum() / denom, -1.0, 1.0))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return pearson(rankdata(a), rankdata(b))


def _window_means(image: np.ndarray, size: int) -> np.ndarray:
    """Mean over every `size`×`size` window lying fully inside `image` (an integral image)."""
    s = np.pad(np.asarray(image, dtype=np.float64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    total = s[size:, size:] - s[:-size, size:] - s[size:, :-size] + s[:-size, :-size]
    return total / (size * size)


def ssim(a: np.ndarray, b: np.ndarray, window: int = 5, data_range: float = 2.0) -> float:
    """Mean structural similarity of two H×W maps, as scikit-image computes it by default:
    uniform `window`, sample covariances, K1=0.01, K2=0.03, averaged over the windows that lie
    inside the image. `data_range` 2 suits maps scaled to [-1, 1] (the reference normalises
    each map by its max |value| and leaves skimage's float range, 2, in place)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"ssim needs two H×W maps of one shape, got {a.shape} and {b.shape}")
    if min(a.shape) < window:
        raise ValueError(f"ssim window {window} is larger than the map {a.shape}")
    n = window * window
    correction = n / (n - 1)  # sample, not population, (co)variances
    mu_a, mu_b = _window_means(a, window), _window_means(b, window)
    var_a = (_window_means(a * a, window) - mu_a * mu_a) * correction
    var_b = (_window_means(b * b, window) - mu_b * mu_b) * correction
    cov = (_window_means(a * b, window) - mu_a * mu_b) * correction
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    numerator = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    denominator = (mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)
    return float((numerator / denominator).mean())


def hog(image: np.ndarray, orientations: int = 9, cell: int = 8, block: int = 3) -> np.ndarray:
    """Histogram of oriented gradients of an H×W map, following scikit-image's `hog`:
    central-difference gradients (zero on the border), unsigned orientations in
    `orientations` bins over [0, 180), per-cell mean magnitude per bin, and `block`×`block`
    cell blocks normalised with L2-Hys (clip 0.2)."""
    image = np.asarray(image, dtype=np.float64)
    g_row = np.zeros_like(image)
    g_col = np.zeros_like(image)
    g_row[1:-1, :] = image[2:, :] - image[:-2, :]
    g_col[:, 1:-1] = image[:, 2:] - image[:, :-2]
    magnitude = np.hypot(g_row, g_col)
    angle = np.rad2deg(np.arctan2(g_row, g_col)) % 180
    bins = np.minimum((angle / (180.0 / orientations)).astype(int), orientations - 1)
    rows, cols = image.shape[0] // cell, image.shape[1] // cell
    if rows < block or cols < block:
        raise ValueError(f"hog: a {image.shape} map has fewer than {block}×{block} cells of "
                         f"{cell} px")
    m = magnitude[:rows * cell, :cols * cell]
    b = bins[:rows * cell, :cols * cell]
    onehot = (b[..., None] == np.arange(orientations)) * m[..., None]
    cells = onehot.reshape(rows, cell, cols, cell, orientations).mean(axis=(1, 3))
    eps = 1e-5
    blocks = np.lib.stride_tricks.sliding_window_view(cells, (block, block), axis=(0, 1))
    blocks = blocks.transpose(0, 1, 3, 4, 2).reshape(rows - block + 1, cols - block + 1, -1)
    out = blocks / np.sqrt((blocks ** 2).sum(-1, keepdims=True) + eps ** 2)
    out = np.minimum(out, 0.2)
    out = out / np.sqrt((out ** 2).sum(-1, keepdims=True) + eps ** 2)
    return out.ravel()


def hog_cell_size(shape: tuple[int, int]) -> int:
    """The reference's 16 px cells on 224 px maps, scaled to this map (at least 3×3 cells)."""
    side = min(shape)
    return max(2, min(round(16 * side / 224), side // 3))
