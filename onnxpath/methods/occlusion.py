"""Occlusion (Zeiler & Fergus 2014), as Captum's Occlusion with a window spanning all channels.

A `window` patch (all channels) is set to `fill`, slid with `stride`; each pixel's attribution
is the mean, over the windows covering it, of f(x) - f(x occluded). Window starts follow
Captum: ceil((size - window) / stride) + 1 per axis, the last window cropped at the border, so
every pixel is covered. Only forward runs are needed, batched `internal_batch_size` at a time,
so this also serves models whose ops have no gradient rule.
"""

from __future__ import annotations

import math

import numpy as np

from ..engine import GradientEngine
from ..errors import UsageError
from . import Attribution, method
from ._common import logits_rows, pick, row_chunks


def pair(value, option: str) -> tuple[int, int]:
    """An int, "HxW" or an (h, w) pair."""
    if isinstance(value, str):
        value = value.lower().replace(",", "x").split("x")
    try:
        values = [int(v) for v in np.atleast_1d(value)]
    except (TypeError, ValueError) as err:
        raise UsageError(f"--{option} takes N or HxW, got '{value}'") from err
    if len(values) not in (1, 2) or min(values) < 1:
        raise UsageError(f"--{option} takes positive N or HxW, got '{value}'")
    return (values[0], values[-1])


def window_starts(size: int, window: int, stride: int) -> list[int]:
    if window > size:
        raise UsageError(f"the occlusion window ({window}) is larger than the input ({size})")
    if stride > window and window < size:  # Captum's rule: no pixel may go uncovered
        raise UsageError(f"the occlusion stride ({stride}) exceeds the window ({window}); "
                         "pixels between windows would get no attribution")
    return [i * stride for i in range(math.ceil((size - window) / stride) + 1)]


@method("occlusion", needs_gradients=False)
def occlusion(engine: GradientEngine, x: np.ndarray, targets: np.ndarray, *,
              window=16, stride=8, fill: float = 0.0,
              internal_batch_size: int | None = 32) -> Attribution:
    shape = x.shape
    if x.ndim == 2:
        # One vector per example (tabular features, a series): occlude along it, one element
        # at a time unless a window is given.
        x = x[:, None, :]
        if (window, stride) == (16, 8):
            window, stride = 1, 1
    (wh, ww), (sh, sw) = pair(window, "window"), pair(stride, "stride")
    height, width = x.shape[-2:]
    wh, sh = (1, 1) if len(shape) == 2 else (wh, sh)
    boxes = [(t, min(t + wh, height), s, min(s + ww, width))
             for t in window_starts(height, wh, sh) for s in window_starts(width, ww, sw)]
    base = pick(logits_rows(engine, x.reshape(shape), internal_batch_size), targets)
    total = np.zeros(x.shape, dtype=np.float64)
    count = np.zeros((height, width))
    for t, b, s, e in boxes:
        count[t:b, s:e] += 1
    rows_example = np.repeat(np.arange(len(x)), len(boxes))
    rows_box = np.tile(np.arange(len(boxes)), len(x))
    for part in row_chunks(len(rows_example), internal_batch_size):
        ex, bx = rows_example[part], rows_box[part]
        occluded = x[ex].copy()
        for row, k in enumerate(bx):
            t, b, s, e = boxes[k]
            occluded[row, ..., t:b, s:e] = fill
        drop = base[ex] - pick(logits_rows(engine, occluded.reshape(-1, *shape[1:])),
                               targets[ex])
        for row, (i, k) in enumerate(zip(ex, bx, strict=True)):
            t, b, s, e = boxes[k]
            total[i, ..., t:b, s:e] += drop[row]
    return Attribution((total / count).reshape(shape),
                       [{"windows": len(boxes)} for _ in range(len(x))])
