"""Machinery the methods share: chunked batches over the engine, baselines, target picking.

Methods that evaluate many perturbed copies of each example (integrated gradients, SmoothGrad,
occlusion, RISE) flatten (example, copy) pairs into rows and run them `batch` rows at a time, so
memory is bounded by the chunk size, never by steps x examples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from onnxpath.errors import UsageError

BASELINES = ("zero", "blur", "uniform")


def row_chunks(total: int, batch: int | None) -> Iterator[slice]:
    """Consecutive slices of `batch` rows (all rows at once when `batch` is None or <= 0)."""
    step = total if not batch or batch <= 0 else int(batch)
    for start in range(0, total, max(step, 1)):
        yield slice(start, min(start + step, total))


def accumulate_rows(total: np.ndarray, rows: np.ndarray, values: np.ndarray) -> None:
    """total[rows[i]] += values[i]; rows come in sorted runs (example-major), so sum each run."""
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    ends = np.r_[starts[1:], len(rows)]
    for s, e in zip(starts, ends, strict=True):
        total[rows[s]] += values[s:e].sum(axis=0, dtype=np.float64)


def pick(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Each row's target logit."""
    return logits[np.arange(len(logits)), np.asarray(targets)]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def gaussian_blur(x: np.ndarray, sigma: float = 5.0, size: int = 11) -> np.ndarray:
    """Separable Gaussian blur over the last two axes, edges reflected (the RISE insertion
    protocol's blur: kernel 11, sigma 5)."""
    radius = size // 2
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    out = np.asarray(x, dtype=np.float64)
    for axis in (-2, -1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="reflect")
        length = out.shape[axis]
        out = sum(w * np.take(padded, np.arange(i, i + length), axis=axis)
                  for i, w in enumerate(kernel))
    return out.astype(np.float32)


def make_baseline(baseline, x: np.ndarray, seed: int | None = 0) -> np.ndarray:
    """The reference input x' for each example, shaped like `x`.

    `baseline` is `zero`, `blur` (Gaussian-blurred x), `uniform` (seeded uniform noise over
    each example's value range), a path to a `.npy` file, a number, or an array that
    broadcasts to one example or to the batch.
    """
    if isinstance(baseline, str) and baseline in BASELINES:
        if baseline == "zero":
            return np.zeros_like(x)
        if baseline == "blur":
            return gaussian_blur(x)
        # One pattern for every example (scaled to its range): an example's baseline then
        # depends on the seed only, not on the rest of the batch.
        pattern = np.random.default_rng(seed).random(x.shape[1:])
        axes = tuple(range(1, x.ndim))
        low, high = x.min(axis=axes, keepdims=True), x.max(axis=axes, keepdims=True)
        return (low + (high - low) * pattern[None]).astype(np.float32)
    if isinstance(baseline, (str, Path)):
        path = Path(baseline)
        if path.suffix != ".npy" or not path.is_file():
            raise UsageError(f"--baseline takes {', '.join(BASELINES)} or an existing .npy "
                             f"file, got '{baseline}'")
        baseline = np.load(path)
    value = np.asarray(baseline, dtype=np.float32)
    try:
        return np.ascontiguousarray(np.broadcast_to(value, x.shape), dtype=np.float32)
    except ValueError as err:
        raise UsageError(f"the baseline has shape {value.shape}; it must broadcast to the "
                         f"input's {x.shape}") from err


def fixed_batch(engine) -> int | None:
    """The batch size the model insists on (exported without a dynamic batch), or None."""
    first = engine.info.input_shape[0] if engine.info.input_shape else None
    return first if isinstance(first, int) and first > 0 else None


def _pad(array: np.ndarray, rows: int) -> np.ndarray:
    if len(array) >= rows:
        return array
    return np.concatenate([array, np.zeros((rows - len(array), *array.shape[1:]), array.dtype)])


def chunk_size(engine, batch: int | None) -> int | None:
    return fixed_batch(engine) or batch


def logits_rows(engine, xs: np.ndarray, batch: int | None = None) -> np.ndarray:
    """Forward runs over many rows, `batch` at a time (padded to a fixed model batch)."""
    fixed = fixed_batch(engine)
    parts = [engine.logits(_pad(xs[part], fixed or 0))[:part.stop - part.start]
             for part in row_chunks(len(xs), fixed or batch)]
    return np.concatenate(parts)


def single_pass(engine, xs: np.ndarray, seed: np.ndarray | None,
                **kwargs) -> tuple[np.ndarray, dict, dict]:
    """engine.gradients for one chunk of rows: (logits, {wrt: grad}, {extra: value}). Zero
    rows with zero seeds fill a fixed model batch and are cut off again. A seed of None
    differentiates each row's predicted class, chosen inside the same run."""
    rows = len(xs)
    fixed = fixed_batch(engine) or 0
    logits, grads, extras = engine.gradients(
        _pad(xs, fixed), None if seed is None else _pad(seed, fixed), **kwargs)
    return (logits[:rows], {k: v[:rows] for k, v in grads.items()},
            {k: v[:rows] for k, v in extras.items()})


def padded_gradients(engine, xs: np.ndarray, seed: np.ndarray, **kwargs) -> tuple[dict, dict]:
    """single_pass without the logits: ({wrt: grad}, {extra: value})."""
    return single_pass(engine, xs, seed, **kwargs)[1:]


def gradients_rows(engine, xs: np.ndarray, seed: np.ndarray, overrides=None) -> np.ndarray:
    """d(seed . logits)/dx for one chunk of rows."""
    return padded_gradients(engine, xs, seed, overrides=overrides)[0][engine.input_name]


def weighted_gradients(engine, rows_x: Callable[[slice], np.ndarray], rows_example: np.ndarray,
                       rows_weight: np.ndarray, targets: np.ndarray, out_shape: tuple,
                       batch: int | None, overrides=None) -> np.ndarray:
    """sum over rows r of example i of rows_weight[r] * d logit_{t_i} / d x (at rows_x(r)).

    The weight rides in the seed (d(seed . logits)/dx is linear in the seed), so weighting
    costs nothing extra in the backward pass.
    """
    total = np.zeros(out_shape, dtype=np.float64)
    for part in row_chunks(len(rows_example), chunk_size(engine, batch)):
        examples = rows_example[part]
        # The weight in float64: the engine casts the seed to the logits' type (float64 too)
        seed = engine.seed(targets[examples]) * rows_weight[part, None].astype(np.float64)
        accumulate_rows(total, examples, gradients_rows(engine, rows_x(part), seed, overrides))
    return total


def _linear_weights(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) matrix of PyTorch's bilinear, align_corners=False: source
    coordinate (i + 0.5) * in/out - 0.5, clamped at 0, neighbours clamped at the edge."""
    src = (np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5
    return interpolation_matrix(np.maximum(src, 0.0), size_in)


def interpolation_matrix(src: np.ndarray, size_in: int) -> np.ndarray:
    """(len(src), size_in) matrix of linear interpolation: output i samples the source at
    coordinate src[i], between its two neighbours (clamped at the edge)."""
    size_out = len(src)
    low = np.minimum(np.floor(src).astype(int), size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    frac = src - low
    weights = np.zeros((size_out, size_in))
    np.add.at(weights, (np.arange(size_out), low), 1 - frac)
    np.add.at(weights, (np.arange(size_out), high), frac)
    return weights


def bilinear_resize(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize the last two axes to `size` as F.interpolate(mode="bilinear") does."""
    rows = _linear_weights(maps.shape[-2], size[0])
    cols = _linear_weights(maps.shape[-1], size[1])
    return np.einsum("hi,...ij,wj->...hw", rows, maps.astype(np.float64), cols)
