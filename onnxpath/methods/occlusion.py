"""Occlusion (Zeiler & Fergus 2014), as Captum's Occlusion with a window spanning all channels.

A `window` patch (all channels) is set to `fill`, slid with `stride`; each pixel's attribution
is the mean, over the windows covering it, of f(x) - f(x occluded). Window starts follow
Captum: ceil((size - window) / stride) + 1 per axis, the last window cropped at the border, so
every pixel is covered. Only forward runs are needed, batched `internal_batch_size` at a time,
so this also serves models whose ops have no gradient rule.

Inputs that are not images (a table row, a C×T series, a T×D text embedding), or any input given
`segments`, are occluded feature by feature instead (a column, a time window, a token; see
`_features.partition`): each feature's drop f(x) − f(x without it) is spread evenly over its
elements, so a map summed over a feature gives its drop. Switched-off elements take `baseline`
(the pad token's embedding for text) when given, else `fill`.
"""

from __future__ import annotations

import math

import numpy as np

from ..engine import GradientEngine
from ..errors import UsageError
from . import Attribution, method
from ._common import logits_rows, pick, row_chunks
from ._features import evaluate, fill_values, partition, spread


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
              window=16, stride=8, fill: float = 0.0, segments=None, baseline=None,
              internal_batch_size: int | None = 32) -> Attribution:
    if segments is not None or x.ndim < 4:
        return occlude_features(engine, x, targets, segments,
                                fill if baseline is None else baseline, internal_batch_size)
    (wh, ww), (sh, sw) = pair(window, "window"), pair(stride, "stride")
    height, width = x.shape[-2:]
    boxes = [(t, min(t + wh, height), s, min(s + ww, width))
             for t in window_starts(height, wh, sh) for s in window_starts(width, ww, sw)]
    base = pick(logits_rows(engine, x, internal_batch_size), targets)
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
        drop = base[ex] - pick(logits_rows(engine, occluded), targets[ex])
        for row, (i, k) in enumerate(zip(ex, bx, strict=True)):
            t, b, s, e = boxes[k]
            total[i, ..., t:b, s:e] += drop[row]
    return Attribution(total / count, [{"windows": len(boxes)} for _ in range(len(x))])


def occlude_features(engine: GradientEngine, x: np.ndarray, targets: np.ndarray, segments,
                     baseline, batch: int | None) -> Attribution:
    maps, extras = [], []
    for i, example in enumerate(x):
        ids = partition(segments, example)
        features = int(ids.max()) + 1
        masks = np.vstack([np.ones((1, features)), 1 - np.eye(features)])
        scores = evaluate(engine, example, fill_values(baseline, example, ids, 0), ids, masks,
                          int(targets[i]), "logit", batch)
        maps.append(spread(scores[0] - scores[1:], ids, example.shape))
        extras.append({"features": features})
    return Attribution(np.stack(maps), extras)
