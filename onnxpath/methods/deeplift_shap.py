"""DeepLiftShap (Lundberg & Lee 2017, "Deep SHAP"; Captum's DeepLiftShap): DeepLIFT averaged
over a distribution of baselines, an estimate of SHAP values that treats the baselines as the
background distribution.

A_i = mean_k (x_i − b_k,i) · m_i(x, b_k), one rescale-rule pass (see `_rescale`) per (example,
baseline) pair; the pairs are flattened into rows and run `internal_batch_size` at a time.
The contributions sum to f(x) − mean_k f(b_k) where DeepLIFT conserves.

The baselines (`baseline`):
- a .npy file or an array shaped (K, *one example): those K rows, shared by every example (as
  Captum's `baselines` tensor): the right choice is a sample of real inputs;
- `uniform` (the default): `samples` draws of uniform noise over each example's value range,
  seeded seed, seed + 1, ...;
- `zero`, `blur`, or an array that broadcasts to one example or to the batch: that one
  baseline, which makes the result DeepLIFT's (text models get the pad token's embedding).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onnxpath.engine.gradient import GradientEngine
from onnxpath.errors import UsageError
from onnxpath.methods import Attribution, method
from onnxpath.methods._common import accumulate_rows, chunk_size, make_baseline, row_chunks
from onnxpath.methods._rescale import deltas, gradient_fallbacks, rescale_pass, target_logits


def baseline_distribution(baseline, x: np.ndarray, samples: int,
                          seed: int | None) -> np.ndarray:
    """The baselines of each example, (N, K, *example shape)."""
    if isinstance(baseline, str) and baseline == "uniform":
        draws = [make_baseline("uniform", x, None if seed is None else seed + k)
                 for k in range(samples)]
        return np.stack(draws, axis=1)
    if isinstance(baseline, (str, Path)) and Path(baseline).suffix == ".npy":
        if not Path(baseline).is_file():
            raise UsageError(f"--baseline file not found: {baseline}")
        baseline = np.load(baseline)
    if not isinstance(baseline, str):
        rows = np.asarray(baseline, dtype=np.float32)
        if rows.ndim == x.ndim and rows.shape[1:] == x.shape[1:]:  # K rows for every example
            return np.ascontiguousarray(np.broadcast_to(rows[None], (len(x), *rows.shape)))
    return make_baseline(baseline, x, seed)[:, None]


@method("deeplift-shap")
def deeplift_shap(engine: GradientEngine, x: np.ndarray, targets: np.ndarray, *,
                  baseline="uniform", samples: int = 10, seed: int | None = 0,
                  internal_batch_size: int | None = 10) -> Attribution:
    if samples < 1:
        raise UsageError(f"deeplift-shap needs --samples >= 1, got {samples}")
    references = baseline_distribution(baseline, x, int(samples), seed)
    count = references.shape[1]
    rows_example = np.repeat(np.arange(len(x)), count)
    rows_reference = references.reshape(-1, *x.shape[1:])
    total = np.zeros(x.shape, dtype=np.float64)
    f_x = np.zeros(len(x))
    f_baseline = np.zeros(len(x))
    logits = None
    for part in row_chunks(len(rows_example), chunk_size(engine, internal_batch_size)):
        examples = rows_example[part]
        rows_x = x[examples]
        row_logits, ref_logits, multipliers = rescale_pass(
            engine, rows_x, rows_reference[part], engine.seed(targets[examples]))
        accumulate_rows(total, examples, (rows_x - rows_reference[part]) * multipliers)
        np.add.at(f_baseline, examples, target_logits(ref_logits, targets[examples]))
        f_x[examples] = target_logits(row_logits, targets[examples])
        if logits is None:
            logits = np.zeros((len(x), row_logits.shape[1]), row_logits.dtype)
        logits[examples] = row_logits
    maps = total / count
    extras = deltas(maps, f_x, f_baseline / count, gradient_fallbacks(engine))
    for extra in extras:
        extra["baselines"] = count
    return Attribution(maps, extras, logits=logits)
