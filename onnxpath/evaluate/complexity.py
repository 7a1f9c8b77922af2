"""Complexity metrics: how concentrated a map is, read from the map alone (no model runs).
Both are Quantus's, defaults included: the raw map, normalised by its own max and made
absolute (normalise=True, abs=True), every input element a feature (`conventions`).

Complexity (Bhatt et al. 2020, Quantus `Complexity`): the entropy of the fractional
    contributions p_i = |a_i| / Σ_j |a_j|,
        H = -Σ_i p_i ln(p_i + 1e-12).
    Lower is better (a less complex explanation).

Sparseness (Chalasani et al. 2020, Quantus `Sparseness`): the Gini index of |a| + 1e-7 sorted
    ascending (a_(1) ≤ … ≤ a_(d)),
        G = Σ_k (2k - d - 1) a_(k) / (d Σ_k a_(k)).
    Higher is better (a sparser explanation).
"""

from __future__ import annotations

import numpy as np

from onnxpath.evaluate.conventions import flat, normalise_by_max


def complexity(maps: np.ndarray) -> np.ndarray:
    """(N,) entropy of each map's fractional contributions; NaN for an all-zero map."""
    a = np.abs(flat(normalise_by_max(maps)))
    with np.errstate(invalid="ignore", divide="ignore"):
        p = a / a.sum(axis=1, keepdims=True)
        return -(p * np.log(p + 1e-12)).sum(axis=1)


def sparseness(maps: np.ndarray) -> np.ndarray:
    """(N,) Gini index of each map's magnitudes."""
    a = np.sort(np.abs(flat(normalise_by_max(maps))) + 1e-7, axis=1)
    d = a.shape[1]
    k = np.arange(1, d + 1)
    return ((2 * k - d - 1) * a).sum(axis=1) / (d * a.sum(axis=1))
