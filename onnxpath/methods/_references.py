"""Reference distributions for the sampling methods: a set of K baseline rows per example.

GradientSHAP (Lundberg & Lee 2017, as Captum's GradientShap) draws its baseline from a
distribution, and feature permutation swaps values with other examples; both need *rows*, not
the one baseline integrated gradients takes. An array (or `.npy` file) with one axis more than
an example is such a set: K rows, each shaped like one example (Captum's convention for
GradientShap's `baselines`). Anything `make_baseline` takes (`zero`, `blur`, `uniform`, a
number, an array that broadcasts to one example) is a set of one row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onnxpath.errors import UsageError
from onnxpath.methods._common import make_baseline


def _loaded(baseline):
    """A `.npy` path loaded; any other value as given."""
    if isinstance(baseline, (str, Path)) and str(baseline).endswith(".npy"):
        path = Path(baseline)
        if not path.is_file():
            raise UsageError(f"--baseline {baseline}: no such .npy file")
        return np.load(path)
    return baseline


def background_rows(baseline, shape: tuple[int, ...]) -> np.ndarray | None:
    """(K, *shape) float32 when `baseline` is a set of rows for examples of `shape` (one axis
    more than an example, each row the example's shape), else None."""
    value = _loaded(baseline)
    if isinstance(value, str) or value is None or np.ndim(value) != len(shape) + 1:
        return None
    rows = np.asarray(value, dtype=np.float32)
    if rows.shape[1:] != tuple(shape) or len(rows) < 1:
        raise UsageError(f"background rows of shape {rows.shape} do not fit examples of shape "
                         f"{tuple(shape)}: give K×{'×'.join(map(str, shape))}")
    return rows


def reference_rows(baseline, x: np.ndarray, seed: int | None) -> np.ndarray:
    """(N, K, *example) reference rows for each example of the batch `x`: a set of K rows
    shared by every example, or each example's own single baseline (K = 1)."""
    rows = background_rows(baseline, x.shape[1:])
    if rows is not None:
        return np.broadcast_to(rows[None], (len(x), *rows.shape))
    return make_baseline(_loaded(baseline), x, seed)[:, None]
