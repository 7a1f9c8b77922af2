"""Localisation against ground-truth object masks: the pointing game and relevance mass,
and the shipped benchmark whose scenes carry masks.

The scenes come from the demo model's generator, `onnxpath.evaluate.scenes` (the demo model was
trained on it; this module only adapts it).
"""

from __future__ import annotations

import numpy as np

from onnxpath.errors import UsageError
from onnxpath.evaluate import scenes as shapes
from onnxpath.evaluate.perturbation import ranking_key


def scaled_tolerance(shape: tuple[int, int], pixels_at_224: float = 15.0) -> float:
    """The pointing game's 15 px tolerance is stated for 224 px images; scale it with the map
    so that a 64 px image is not judged with a quarter of its width."""
    return pixels_at_224 * min(shape) / 224.0


def distance_to_mask(point: tuple[int, int], mask: np.ndarray) -> float:
    """Euclidean distance from `point` (row, col) to the nearest mask pixel (inf if empty)."""
    pixels = np.argwhere(np.asarray(mask, dtype=bool))
    if not len(pixels):
        return float("inf")
    return float(np.hypot(pixels[:, 0] - point[0], pixels[:, 1] - point[1]).min())


def pointing_game(heats: np.ndarray, masks: np.ndarray, tolerance: float | None = None,
                  rank: str = "signed") -> np.ndarray:
    """(N,) 1.0 where the map's maximum lies within `tolerance` px of the mask, else 0.0.
    The maximum is taken of the same key pixels are ranked by; ties go to the first pixel."""
    hits = np.zeros(len(heats))
    for i, (heat, mask) in enumerate(zip(heats, masks, strict=True)):
        tol = scaled_tolerance(heat.shape) if tolerance is None else tolerance
        key = ranking_key(heat, rank)
        r, c = np.unravel_index(np.argmax(key), key.shape)
        hits[i] = float(distance_to_mask((r, c), mask) <= tol)
    return hits


def relevance_mass(heats: np.ndarray, masks: np.ndarray, rank: str = "signed") -> np.ndarray:
    """(N,) share of the positive relevance that falls inside the mask (Arras et al. 2022).
    With `rank="abs"` all relevance counts, whatever its sign. NaN for an all-zero map."""
    out = np.zeros(len(heats))
    for i, (heat, mask) in enumerate(zip(heats, masks, strict=True)):
        relevance = np.maximum(ranking_key(heat, rank), 0.0)
        total = relevance.sum()
        out[i] = relevance[np.asarray(mask, dtype=bool)].sum() / total if total > 0 else np.nan
    return out


def shapes_scenes(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images uint8 (N, H, W, 3), labels (N,), masks bool (N, H, W)) from the generator."""
    if count < 1:
        raise UsageError(f"--scenes needs at least 1 scene, got {count}")
    return shapes.make_dataset(count, seed)
