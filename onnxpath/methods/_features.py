"""Features for the surrogate methods (LIME, KernelSHAP): which input elements switch together.

A *feature* is a group of input elements that a perturbation switches off at once: an image
segment, a token (a row of a T×D embedding map), a table column or a time window. A partition is
an integer array of feature ids, shaped so that it broadcasts to one example (a grid over H×W is
1×H×W, so every channel of a pixel goes together; tokens of a T×D map are T×1). The methods
never ask what the modality is: the input adapters choose the partition (`segments=`), and
`default_segments` only guesses from the rank when nobody chose.

Switched-off features take the baseline's value there: zero in model space, the per-feature
mean of the example (`mean`, lime's `hide_color=None`), a blur, or any array (the pad-token
embedding for text, column means for tables).
"""

from __future__ import annotations

import math

import numpy as np

from onnxpath.errors import UsageError
from onnxpath.methods._common import logits_rows, make_baseline, row_chunks, softmax
from onnxpath.methods.slic import slic

SEGMENT_KINDS = ("grid", "slic", "each", "rows", "windows")


def default_segments(shape: tuple[int, ...]) -> str:
    """A partition kind from the example's rank: C×H×W → grid; F → each element (a table row,
    or windows when it is long); C×T → windows."""
    if len(shape) >= 3:
        return "grid"
    if len(shape) == 1 and shape[0] <= 256:
        return "each"
    return "windows"


def _count(spec: str, default: int) -> int:
    _, _, value = spec.partition(":")
    if not value:
        return default
    try:
        count = int(value)
    except ValueError as err:
        raise UsageError(f"--segments {spec}: the number after ':' must be an integer") from err
    if count < 1:
        raise UsageError(f"--segments {spec}: the number must be at least 1")
    return count


def too_many(spec: str, kind: str, shape: tuple[int, ...]) -> None:
    """An explicit count the input cannot hold is an error, not a silent clamp (the defaults,
    8×8 cells and 32 windows, shrink to fit small inputs)."""
    if ":" not in spec or kind not in ("grid", "windows"):
        return
    count = _count(spec, 1)
    room = min(shape[-2:]) if kind == "grid" else shape[-1]
    if count > room:
        what, axis = ("cells per side", "side") if kind == "grid" else ("windows", "length")
        raise UsageError(f"--segments {spec}: {count} {what} do not fit an input of {axis} "
                         f"{room}; give at most {room}")


def grid(shape: tuple[int, ...], cells: int) -> np.ndarray:
    """cells×cells blocks over the last two axes, broadcast over the rest."""
    height, width = shape[-2:]
    rows = np.minimum(np.arange(height) * cells // max(height, 1), cells - 1)
    cols = np.minimum(np.arange(width) * cells // max(width, 1), cells - 1)
    ids = rows[:, None] * cells + cols[None, :]
    return ids.reshape((1,) * (len(shape) - 2) + ids.shape)


def windows(shape: tuple[int, ...], count: int) -> np.ndarray:
    """`count` equal windows along the last axis (time), all channels together."""
    length = shape[-1]
    count = min(count, length)
    ids = np.minimum(np.arange(length) * count // length, count - 1)
    return ids.reshape((1,) * (len(shape) - 1) + (length,))


def partition(segments, x: np.ndarray) -> np.ndarray:
    """Feature ids for one example `x`, consecutive from 0, broadcastable to x.shape.

    `segments`: None (guess from the rank), `grid[:K]` (K×K cells, default 8), `slic[:N]` (about
    N superpixels, default 50), `each` (every element), `rows` (one feature per index of the
    first axis: tokens of a T×D map), `windows[:K]` (K windows along the last axis, default
    32), or an integer array that broadcasts to the example.
    """
    shape = x.shape
    if segments is None:
        segments = default_segments(shape)
    if isinstance(segments, str):
        kind = segments.split(":")[0]
        if kind not in SEGMENT_KINDS:
            raise UsageError(f"--segments takes {', '.join(SEGMENT_KINDS)} (with :N where it "
                             f"counts) or an array, got '{segments}'")
        if kind in ("grid", "slic") and len(shape) < 2:
            raise UsageError(f"--segments {kind} needs an input with two spatial axes; this "
                             f"one has shape {shape}")
        too_many(segments, kind, shape)
        if kind == "grid":
            ids = grid(shape, _count(segments, 8))
        elif kind == "slic":
            image = x if len(shape) >= 3 else x[None]
            ids = slic(image.reshape(-1, *shape[-2:]), _count(segments, 50))
            ids = ids.reshape((1,) * (len(shape) - 2) + ids.shape)
        elif kind == "each":
            ids = np.arange(x.size).reshape(shape)
        elif kind == "rows":
            ids = np.arange(shape[0]).reshape((shape[0],) + (1,) * (len(shape) - 1))
        else:
            ids = windows(shape, _count(segments, 32))
    else:
        ids = np.asarray(segments)
        if not np.issubdtype(ids.dtype, np.integer):
            raise UsageError("a segments array must hold integer feature ids")
        try:
            np.broadcast_shapes(ids.shape, shape)
        except ValueError as err:
            raise UsageError(f"segments of shape {ids.shape} do not broadcast to the input's "
                             f"{shape}") from err
        while ids.ndim > len(shape) and ids.shape[0] == 1:
            ids = ids[0]
    _, inverse = np.unique(ids, return_inverse=True)  # consecutive ids
    return inverse.reshape((1,) * (len(shape) - ids.ndim) + ids.shape)  # the example's rank


def fill_values(baseline, x: np.ndarray, ids: np.ndarray, seed: int | None) -> np.ndarray:
    """The switched-off value of every element of the example `x` (shaped like x). `mean`: the
    feature's mean over its elements, separately along the axes the partition broadcasts over
    (each channel of an image segment, as lime's `hide_color=None`)."""
    if isinstance(baseline, str) and baseline == "mean":
        full = np.broadcast_to(ids, x.shape)
        count = int(ids.max()) + 1
        # Move the axes the partition varies along to the back, flatten them, then average per id.
        vary = [a for a in range(x.ndim) if ids.shape[a - x.ndim + ids.ndim] != 1] \
            if ids.ndim else []
        keep = [a for a in range(x.ndim) if a not in vary]
        xs = np.transpose(x, keep + vary).reshape(-1, math.prod(x.shape[a] for a in vary))
        fs = np.transpose(full, keep + vary).reshape(xs.shape)[0]
        sums = np.stack([np.bincount(fs, row, minlength=count) for row in xs])
        means = sums / np.bincount(fs, minlength=count)
        out = np.take_along_axis(means, np.broadcast_to(fs, xs.shape), axis=1)
        inverse = np.argsort(keep + vary)
        shaped = out.reshape([x.shape[a] for a in keep + vary])
        return np.transpose(shaped, inverse).astype(np.float32)
    return make_baseline(baseline, x[None], seed)[0]


def target_scores(logits: np.ndarray, targets: np.ndarray, score: str) -> np.ndarray:
    """The explained quantity per row: the target's softmax probability, or its logit (also
    used for single-column outputs, where a softmax is always 1)."""
    if score not in ("probability", "logit"):
        raise UsageError(f"--score takes probability or logit, got '{score}'")
    logits = logits.astype(np.float64)
    rows = np.arange(len(logits))
    if score == "logit" or logits.shape[-1] == 1:
        return logits[rows, targets]
    return softmax(logits)[rows, targets]


def evaluate(engine, x: np.ndarray, fill: np.ndarray, ids: np.ndarray, masks: np.ndarray,
             target: int, score: str, batch: int | None) -> np.ndarray:
    """The explained score of x with each mask row's switched-off features set to `fill`:
    (S,) for masks (S, M). Perturbed copies are built a chunk at a time, with no per-sample
    Python loop: keep[s, element] = masks[s, ids[element]]."""
    out = np.empty(len(masks))
    on = np.asarray(masks, dtype=bool)
    for part in row_chunks(len(masks), batch):
        keep = on[part][:, ids]  # (rows, *ids.shape): broadcast over the axes ids spans not
        rows = np.where(keep, x[None], fill[None]).astype(np.float32, copy=False)
        logits = logits_rows(engine, rows, batch)
        out[part] = target_scores(logits, np.full(len(rows), target), score)
    return out


def spread(coefficients: np.ndarray, ids: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A map shaped like the example, each feature's coefficient shared equally among its
    elements, so that a map summed over a feature gives the coefficient back (and a KernelSHAP
    map sums to f(x) − f(baseline), as integrated gradients' does)."""
    full = np.broadcast_to(ids, shape)
    sizes = np.bincount(full.ravel(), minlength=len(coefficients))
    return (coefficients / np.maximum(sizes, 1))[full]
