"""GradientSHAP (Lundberg & Lee 2017, "expected gradients"), as Captum's GradientShap.

SHAP values approximated as an expectation of gradients over a reference distribution: each of
`samples` draws picks a baseline b from the distribution, adds Gaussian noise ε (sigma `noise`)
to the input and a point α ~ U(0, 1) along the straight path, and contributes

    ∇f(b + α (x + ε − b)) × (x + ε − b),

the attribution being their mean. As in Captum (and `shap.GradientExplainer`'s local
smoothing), the multiplier is the *noisy* input minus the baseline. With no noise and a single
baseline this is a one-point-per-sample Monte Carlo estimate of integrated gradients.

The distribution is `baseline`: K rows (a K×<example> `.npy` file or array, e.g. examples of
the data set; see `_references`), or one baseline as integrated gradients takes it (`zero` by
default; the pad token's embedding for text). Draw k (unit noise, α, which row) comes from
`default_rng([seed, k])` and is shared by the examples of a batch, so an example's result
depends on the seed alone, not on the batch. `gradient_shap_rows` takes the draws themselves:
that is how a test feeds us and Captum the very same ones.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from onnxpath.engine.gradient import GradientEngine
from onnxpath.errors import UsageError
from onnxpath.methods import Attribution, method
from onnxpath.methods._common import accumulate_rows, chunk_size, gradients_rows, row_chunks
from onnxpath.methods._references import reference_rows
from onnxpath.methods.smoothgrad import noise_sigma

# draws(examples, samples) -> (noise (R, *example), reference row index (R,), alpha (R,)) for
# the R (example, sample) pairs of one chunk.
Draws = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


def seeded_draws(seed: int | None, shape: tuple[int, ...], references: int,
                 sigma: np.ndarray) -> Draws:
    """Draw k's unit noise, α and reference row from `default_rng([seed, k])`, the noise
    scaled by each example's sigma."""
    fresh = int(np.random.SeedSequence().entropy) if seed is None else None

    def one(sample: int) -> tuple[np.ndarray, int, float]:
        rng = np.random.default_rng([sample, fresh] if seed is None else [int(seed), sample])
        noise = rng.standard_normal(shape, dtype=np.float32)
        return noise, int(rng.integers(references)), float(rng.random())

    def draws(examples: np.ndarray, samples: np.ndarray):
        drawn = [one(int(k)) for k in samples]
        noise = np.stack([d[0] for d in drawn])
        noise *= sigma[examples].reshape(-1, *[1] * len(shape))
        return noise, np.array([d[1] for d in drawn]), np.array([d[2] for d in drawn])

    return draws


def gradient_shap_rows(engine: GradientEngine, x: np.ndarray, targets: np.ndarray,
                       references: np.ndarray, samples: int, draws: Draws,
                       batch: int | None) -> np.ndarray:
    """(N, *example) float64: the mean over `samples` draws of ∇f(b + α(x + ε − b)) ×
    (x + ε − b), with `references` (N, K, *example) and the (example, sample) rows run a
    chunk at a time."""
    rows_example = np.repeat(np.arange(len(x)), samples)
    rows_sample = np.tile(np.arange(samples), len(x))
    total = np.zeros(x.shape, dtype=np.float64)
    ones = [1] * (x.ndim - 1)
    for part in row_chunks(len(rows_example), chunk_size(engine, batch)):
        examples = rows_example[part]
        noise, picks, alphas = draws(examples, rows_sample[part])
        base = references[examples, picks]
        span = (x[examples] + noise - base).astype(np.float32)
        points = base + np.asarray(alphas, np.float32).reshape(-1, *ones) * span
        grads = gradients_rows(engine, points.astype(np.float32), engine.seed(targets[examples]))
        accumulate_rows(total, examples, grads * span)
    return total / samples


@method("gradient-shap")
def gradient_shap(engine: GradientEngine, x: np.ndarray, targets: np.ndarray, *,
                  samples: int = 5, noise: float | str = 0.0, baseline="zero",
                  seed: int | None = 0, internal_batch_size: int | None = 10) -> Attribution:
    """`samples` (Captum's n_samples, 5), `noise` (Captum's stdevs: absolute, or "P%" of
    each example's range; 0), `baseline`: the reference distribution (see the module doc)."""
    samples = int(samples)
    if samples < 1:
        raise UsageError(f"gradient-shap needs --samples >= 1, got {samples}")
    references = reference_rows(baseline, x, seed)
    sigma = noise_sigma(noise, x).astype(np.float32)
    if (sigma < 0).any():
        raise UsageError(f"--noise must not be negative, got '{noise}'")
    draws = seeded_draws(seed, x.shape[1:], references.shape[1], sigma)
    maps = gradient_shap_rows(engine, x, np.asarray(targets), references, samples, draws,
                              internal_batch_size)
    return Attribution(maps, [{"samples": samples, "references": int(references.shape[1]),
                               "sigma": float(s)} for s in sigma])
