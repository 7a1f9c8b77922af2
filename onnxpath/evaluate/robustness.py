"""Robustness metrics: how much the explanation moves when the input moves a little. Both
re-run the method on perturbed copies of each input, for the same target class, through the
caller's `explain` (in `evaluate`, the same Explainer that made the maps).

Max-sensitivity (Yeh et al. 2019, Captum `sensitivity_max`): with n = `n_perturb_samples` = 10
    perturbations δ_j drawn uniformly from the L∞ ball of radius r = `perturb_radius` = 0.02,
        SENS_max = max_j ‖Φ(x) - Φ(x + δ_j)‖_F / ‖Φ(x)‖_F
    on the raw maps (‖Φ(x)‖ = 0 counts as 1, as in Captum). Lower is better.

Local Lipschitz estimate (Alvarez-Melis & Jaakkola 2018, Quantus `LocalLipschitzEstimate`):
    with n = `nr_samples` perturbations x'_j = x + ε_j, ε_j ~ N(0, σ²) on every input element
    (σ = `perturb_std` = 0.1),
        L = max_j ‖a(x) - a(x'_j)‖₂ / (‖x - x'_j‖₂ + 1e-10)
    with a the map normalised by its own max (Quantus's normalise=True, abs=False). Quantus's
    default is 200 samples; `evaluate` defaults to 10 so that a 2-core CPU copes, and takes
    200 as an option. Lower is better.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from onnxpath.evaluate.conventions import flat, normalise_by_max, rng_for

# (perturbed inputs of one image, its target repeated) -> maps of the same method
Explain = Callable[[np.ndarray, np.ndarray], np.ndarray]

SENSITIVITY_SAMPLES = 10
SENSITIVITY_RADIUS = 0.02
LIPSCHITZ_SAMPLES = 10  # Quantus: 200
LIPSCHITZ_STD = 0.1


def sensitivity_inputs(x: np.ndarray, samples: int, radius: float, seed: int,
                       image: int) -> np.ndarray:
    """(samples, C, H, W) float32 x + δ, δ ~ U(-radius, radius) per element (Captum's
    `default_perturb_func`, in float32 as Captum's FloatTensor draws it)."""
    rng = rng_for("max-sensitivity", seed, image)
    noise = rng.uniform(-radius, radius, size=(samples, *x.shape)).astype(np.float32)
    return np.asarray(x, dtype=np.float32)[None] + noise


def lipschitz_inputs(x: np.ndarray, samples: int, std: float, seed: int,
                     image: int) -> np.ndarray:
    """(samples, C, H, W) float32 x + ε, ε ~ N(0, std²) per element (Quantus's
    `batch_gaussian_noise`, added in float64 and stored in the input's float32)."""
    rng = rng_for("local-lipschitz", seed, image)
    noise = rng.normal(0.0, std, size=(samples, *x.shape))
    return (np.asarray(x, dtype=np.float64)[None] + noise).astype(np.float32)


def max_sensitivity(explain: Explain, x: np.ndarray, maps: np.ndarray, targets: np.ndarray,
                    samples: int = SENSITIVITY_SAMPLES, radius: float = SENSITIVITY_RADIUS,
                    seed: int = 0) -> np.ndarray:
    """(N,) Captum's sensitivity_max of each image's map."""
    scores = np.empty(len(x))
    for i in range(len(x)):
        perturbed = sensitivity_inputs(x[i], samples, radius, seed, i)
        moved = flat(explain(perturbed, np.full(samples, targets[i])))
        original = flat(maps[i:i + 1])
        norm = np.linalg.norm(original)
        scores[i] = (np.linalg.norm(original - moved, axis=1) / (norm if norm else 1.0)).max()
    return scores


def local_lipschitz(explain: Explain, x: np.ndarray, maps: np.ndarray, targets: np.ndarray,
                    samples: int = LIPSCHITZ_SAMPLES, std: float = LIPSCHITZ_STD,
                    seed: int = 0) -> np.ndarray:
    """(N,) Quantus's local Lipschitz estimate of each image's map."""
    scores = np.empty(len(x))
    for i in range(len(x)):
        perturbed = lipschitz_inputs(x[i], samples, std, seed, i)
        moved = flat(normalise_by_max(explain(perturbed, np.full(samples, targets[i]))))
        original = flat(normalise_by_max(maps[i:i + 1]))
        steps = np.linalg.norm(flat(x[i:i + 1]) - flat(perturbed), axis=1)
        ratios = np.linalg.norm(original - moved, axis=1) / (steps + 1e-10)
        scores[i] = np.nanmax(ratios) if np.isfinite(ratios).any() else np.nan
    return scores
