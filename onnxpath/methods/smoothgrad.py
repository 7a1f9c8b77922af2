"""SmoothGrad (Smilkov et al. 2017) and its SG-squared and VarGrad variants, as Captum's
NoiseTunnel over Saliency computes them.

Each example is copied `samples` times with Gaussian noise added in the model's input space;
the per-copy gradients are averaged (`mean`), averaged after squaring (`square`) or turned into
their variance (`var`). Sample k's noise pattern comes from `default_rng([seed, k])` and is
scaled by the example's sigma, so an example's result depends on the seed alone, not on the
other examples in the batch or on how the batch is split. `noise_tensors` (N, samples, *input)
replaces the draw; that is how a test feeds us and Captum the very same noise.
"""

from __future__ import annotations

import numpy as np

from onnxpath.engine.gradient import GradientEngine
from onnxpath.errors import UsageError
from onnxpath.methods import Attribution, method
from onnxpath.methods._common import accumulate_rows, chunk_size, gradients_rows, row_chunks

VARIANTS = ("mean", "square", "var")


def noise_sigma(noise: float | str, x: np.ndarray) -> np.ndarray:
    """Per-example sigma: an absolute number (Captum's `stdevs`), or "P%" of the example's
    value range max(x) - min(x) (the SmoothGrad paper's convention, e.g. "15%")."""
    axes = tuple(range(1, x.ndim))
    text = str(noise).strip()
    try:
        if text.endswith("%"):
            fraction = float(text[:-1]) / 100
            return fraction * (x.max(axis=axes) - x.min(axis=axes))
        return np.full(len(x), float(text))
    except ValueError as err:
        raise UsageError(f"--noise takes a sigma (e.g. 1.0) or a percentage of the input "
                         f"range (e.g. 15%), got '{noise}'") from err


def sample_noise(seed: int | None, sample: int, shape: tuple) -> np.ndarray:
    """Unit Gaussian noise of sample `sample`; the same for every example."""
    entropy = [sample] if seed is None else [int(seed), sample]
    if seed is None:
        entropy.append(int(np.random.SeedSequence().entropy))
    return np.random.default_rng(entropy).standard_normal(shape, dtype=np.float32)


@method("smoothgrad")
def smoothgrad(engine: GradientEngine, x: np.ndarray, targets: np.ndarray, *,
               samples: int = 5, noise: float | str = 1.0, variant: str = "mean",
               seed: int | None = 0, absolute: bool = False,
               internal_batch_size: int | None = 10,
               noise_tensors: np.ndarray | None = None) -> Attribution:
    """`absolute=True` takes |gradient| per sample first, as NoiseTunnel(Saliency()) does."""
    if variant not in VARIANTS:
        raise UsageError(f"unknown --variant '{variant}'; choose from {', '.join(VARIANTS)}")
    samples = int(samples)
    if samples < 1:
        raise UsageError(f"--samples must be at least 1, got {samples}")
    if noise_tensors is not None:
        noise_tensors = np.asarray(noise_tensors, dtype=np.float32)
        if noise_tensors.shape != (len(x), samples, *x.shape[1:]):
            raise UsageError(f"noise_tensors must have shape {(len(x), samples, *x.shape[1:])}, "
                             f"got {noise_tensors.shape}")
    sigma = noise_sigma(noise, x).astype(np.float32)
    rows_example = np.repeat(np.arange(len(x)), samples)
    rows_sample = np.tile(np.arange(samples), len(x))
    total = np.zeros(x.shape, dtype=np.float64)
    total_sq = np.zeros(x.shape, dtype=np.float64)
    for part in row_chunks(len(rows_example), chunk_size(engine, internal_batch_size)):
        ex = rows_example[part]
        if noise_tensors is not None:
            eps = noise_tensors[ex, rows_sample[part]]
        else:  # drawn per chunk, so memory stays bounded by the chunk
            eps = np.stack([sample_noise(seed, k, x.shape[1:]) for k in rows_sample[part]])
            eps *= sigma[ex].reshape(-1, *[1] * (x.ndim - 1))
        grads = gradients_rows(engine, x[ex] + eps, engine.seed(targets[ex]))
        if absolute:
            grads = np.abs(grads)
        accumulate_rows(total, ex, grads)
        accumulate_rows(total_sq, ex, grads.astype(np.float64) ** 2)
    mean, mean_sq = total / samples, total_sq / samples
    maps = {"mean": mean, "square": mean_sq, "var": mean_sq - mean * mean}[variant]
    return Attribution(maps, [{"sigma": float(s)} for s in sigma])
