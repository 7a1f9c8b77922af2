"""LIME (Ribeiro et al. 2016), forward runs only, with `lime`'s kernel and regression.

For each example: `samples` binary masks z over its features (drawn as `lime` draws them:
RandomState(seed).randint(0, 2), the first row all ones); each masked copy keeps the features
where z = 1 and takes the baseline elsewhere; the model's target score (softmax probability by
default) is regressed on z by ridge regression (α = 1, with intercept), each sample weighted by
sqrt(exp(−d² / w²)) with d the cosine distance between z and the all-ones mask. The coefficients
are the attributions, spread evenly over each feature's elements (see `_features.spread`).

Kernel width: 0.25, `lime`'s for images and text; 0.75·√M, `lime`'s for tables, when every
element is its own feature (`segments=each`).
"""

from __future__ import annotations

import numpy as np

from onnxpath.engine.gradient import GradientEngine
from onnxpath.errors import UsageError
from onnxpath.methods import Attribution, method
from onnxpath.methods._features import default_segments, evaluate, fill_values, partition, spread


def lime_masks(samples: int, features: int, seed: int | None) -> np.ndarray:
    """(samples, features) binary masks, first row all ones, as `lime` draws them."""
    masks = np.random.RandomState(seed).randint(0, 2, samples * features) \
        .reshape(samples, features)
    masks[0, :] = 1
    return masks


def cosine_distance(masks: np.ndarray) -> np.ndarray:
    """Cosine distance of each mask from the all-ones mask (1 for the empty mask)."""
    masks = masks.astype(np.float64)
    norms = np.linalg.norm(masks, axis=1) * np.sqrt(masks.shape[1])
    return 1.0 - np.divide(masks.sum(axis=1), norms, out=np.zeros(len(masks)), where=norms > 0)


def kernel(distances: np.ndarray, width: float) -> np.ndarray:
    return np.sqrt(np.exp(-(distances ** 2) / width ** 2))


def weighted_ridge(z: np.ndarray, y: np.ndarray, weights: np.ndarray,
                   alpha: float = 1.0) -> tuple[np.ndarray, float]:
    """(coefficients, intercept) of ridge regression with intercept and sample weights, as
    scikit-learn's Ridge computes it: centre on the weighted means, then solve
    (Xcᵀ W Xc + αI) β = Xcᵀ W yc."""
    z = z.astype(np.float64)
    total = weights.sum()
    z_mean = weights @ z / total
    y_mean = weights @ y / total
    zc, yc = z - z_mean, y - y_mean
    wz = weights[:, None] * zc
    # einsum, not BLAS: see kernel_shap.constrained_wls.
    coef = np.linalg.solve(np.einsum("si,sj->ij", zc, wz) + alpha * np.eye(z.shape[1]),
                           np.einsum("si,s->i", wz, yc))
    return coef, float(y_mean - z_mean @ coef)


@method("lime", needs_gradients=False)
def lime(engine: GradientEngine, x: np.ndarray, targets: np.ndarray, *,
         samples: int = 1000, segments=None, baseline="zero", kernel_width: float | None = None,
         alpha: float = 1.0, score: str = "probability", seed: int | None = 0,
         internal_batch_size: int | None = 64) -> Attribution:
    if samples < 2:
        raise UsageError(f"LIME needs --samples >= 2, got {samples}")
    maps, extras = [], []
    for i, example in enumerate(x):
        ids = partition(segments, example)
        features = int(ids.max()) + 1
        fill = fill_values(baseline, example, ids, seed)
        masks = lime_masks(samples, features, seed)
        y = evaluate(engine, example, fill, ids, masks, int(targets[i]), score,
                     internal_batch_size)
        kind = segments if segments is not None else default_segments(example.shape)
        width = kernel_width if kernel_width is not None else (
            0.75 * np.sqrt(features) if kind == "each" else 0.25)
        coef, intercept = weighted_ridge(masks, y, kernel(cosine_distance(masks), width), alpha)
        maps.append(spread(coef, ids, example.shape))
        extras.append({"features": features, "samples": samples, "intercept": intercept,
                       "kernel_width": float(width)})
    return Attribution(np.stack(maps), extras)
