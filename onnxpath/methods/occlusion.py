"""Occlusion (Zeiler & Fergus 2014), as Captum's Occlusion with a window spanning all channels.

A `window` patch (all channels) is set to `fill`, slid with `stride`; each pixel's attribution
is the mean, over the windows covering it, of f(x) - f(x occluded). Window starts follow
Captum: ceil((size - window) / stride) + 1 per axis, the last window cropped at the border, so
every pixel is covered. Only forward runs are needed, batched `internal_batch_size` at a time
(default: the fastest batch size measured for the model) and built vectorised while the
previous batch runs (`batching.py`), so this also serves models whose ops have no gradient
rule, at ONNX Runtime's own throughput.

Inputs that are not images (a table row, a C×T series, a T×D text embedding), or any input given
`segments`, are occluded feature by feature instead (a column, a time window, a token; see
`_features.partition`): each feature's drop f(x) − f(x without it) is spread evenly over its
elements, so a map summed over a feature gives its drop. Switched-off elements take `baseline`
(the pad token's embedding for text) when given, else `fill`.
"""

from __future__ import annotations

import math

import numpy as np

from onnxpath.engine.batching import engine_rows
from onnxpath.engine.gradient import GradientEngine
from onnxpath.errors import UsageError
from onnxpath.methods import Attribution, method
from onnxpath.methods._common import logits_rows, pick
from onnxpath.methods._features import evaluate, fill_values, partition, spread


def pair(value, option: str) -> tuple[int, int]:
    """An int, "HxW" or an (h, w) pair."""
    given = "x".join(map(str, value)) if isinstance(value, (list, tuple)) else value
    if isinstance(value, str):
        value = value.lower().replace(",", "x").split("x")
    try:
        values = [int(v) for v in np.atleast_1d(value)]
    except (TypeError, ValueError) as err:
        raise UsageError(f"--{option} takes N or HxW, got '{given}'") from err
    if len(values) not in (1, 2) or min(values) < 1:
        raise UsageError(f"--{option} takes positive N or HxW, got '{given}'")
    return (values[0], values[-1])


def window_starts(size: int, window: int, stride: int) -> list[int]:
    if window > size:
        raise UsageError(f"the occlusion window ({window}) is larger than the input ({size})")
    if stride > window and window < size:  # Captum's rule: no pixel may go uncovered
        raise UsageError(f"the occlusion stride ({stride}) exceeds the window ({window}); "
                         "pixels between windows would get no attribution")
    return [i * stride for i in range(math.ceil((size - window) / stride) + 1)]


def box_sums(shape: tuple[int, int, int], rows: np.ndarray, boxes: np.ndarray,
             values: np.ndarray) -> np.ndarray:
    """(N, H, W) float64: sum over r of values[r] on the box boxes[r] = (top, bottom, left,
    right) of example rows[r]. Each box adds its value at four corners of a difference array
    and two cumulative sums spread it, so the cost does not grow with the box area."""
    n, height, width = shape
    diff = np.zeros((n, height + 1, width + 1))
    t, b, s, e = boxes.T
    for ys, xs, sign in ((t, s, 1.0), (t, e, -1.0), (b, s, -1.0), (b, e, 1.0)):
        np.add.at(diff, (rows, ys, xs), sign * values)
    return diff.cumsum(axis=1).cumsum(axis=2)[:, :height, :width]


@method("occlusion", needs_gradients=False)
def occlusion(engine: GradientEngine, x: np.ndarray, targets: np.ndarray, *,
              window=16, stride=8, fill: float = 0.0, segments=None, baseline=None,
              internal_batch_size: int | None = None) -> Attribution:
    """`internal_batch_size` None runs the batch size measured fastest for the model."""
    if segments is not None or x.ndim < 4:
        return occlude_features(engine, x, targets, segments,
                                fill if baseline is None else baseline, internal_batch_size)
    (wh, ww), (sh, sw) = pair(window, "window"), pair(stride, "stride")
    height, width = x.shape[-2:]
    boxes = np.array([(t, min(t + wh, height), s, min(s + ww, width))
                      for t in window_starts(height, wh, sh)
                      for s in window_starts(width, ww, sw)])
    logits = logits_rows(engine, x, internal_batch_size)
    base = pick(logits, targets)
    ys, xs = np.arange(height), np.arange(width)
    spatial = (-1, *[1] * (x.ndim - 3), height, width)

    def occlude(start: int, stop: int, out: np.ndarray) -> None:
        rows = np.arange(start, stop)
        t, b, s, e = boxes[rows % len(boxes)].T
        inside = (((ys >= t[:, None]) & (ys < b[:, None]))[:, :, None]
                  & ((xs >= s[:, None]) & (xs < e[:, None]))[:, None, :])
        np.take(x, rows // len(boxes), axis=0, out=out, mode="clip")  # unbuffered
        np.copyto(out, np.float32(fill), where=inside.reshape(spatial))

    total = len(x) * len(boxes)
    occluded = engine_rows(engine, total, x.shape[1:], occlude, internal_batch_size)
    examples = np.arange(total) // len(boxes)
    drop = base[examples].astype(np.float64) - pick(occluded, targets[examples])
    tiled = np.tile(boxes, (len(x), 1))
    sums = box_sums((len(x), height, width), examples, tiled, drop)
    count = box_sums((1, height, width), np.zeros(len(boxes), int), boxes,
                     np.ones(len(boxes)))[0]
    maps = np.broadcast_to((sums / count).reshape(len(x), *[1] * (x.ndim - 3), height, width),
                           x.shape)
    return Attribution(maps, [{"windows": len(boxes)} for _ in range(len(x))], logits=logits)


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
