"""Running a model whose batch dim is fixed (exported with batch N > 1, or 1) on any number of
rows.

ONNX Runtime refuses any other batch size than the one a graph declares, so every run the
engine makes (the forward pass, gradient graphs, surgery's masked graphs) goes through here:
the rows are cut into chunks of N, a short chunk is filled up by repeating its own rows (values
the model has seen, so no padding row can overflow or divide by zero where a real row does
not), and what comes back is cut to the real rows again. Padding rows get a zero seed, so they
add nothing to any gradient, also to gradients of tensors shared by the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np


def fixed_rows(input_shape: tuple) -> int | None:
    """The batch size the graph insists on (its first input dim, when a number), or None."""
    first = input_shape[0] if input_shape else None
    return first if isinstance(first, int) and first > 0 else None


def needs_chunks(size: int | None, rows: int) -> bool:
    return size is not None and rows != size


def tiled(array: np.ndarray, rows: slice, size: int) -> np.ndarray:
    """array[rows] repeated cyclically to `size` rows."""
    part = array[rows]
    return part[np.arange(size) % len(part)]


def padded_feeds(feeds: Mapping[str, np.ndarray] | None, total: int, rows: slice,
                 size: int) -> dict:
    """Feeds with one row per row of x (masks, other inputs) cut and tiled like x; the others
    (shared by the whole batch) as they are."""
    return {k: tiled(v, rows, size) if getattr(v, "ndim", 0) and len(v) == total else v
            for k, v in (feeds or {}).items()}


def zero_padded(seed: np.ndarray, rows: slice, size: int) -> np.ndarray:
    part = seed[rows]
    pad = np.zeros((size - len(part), *part.shape[1:]), part.dtype)
    return np.concatenate([part, pad])


def chunks(total: int, size: int) -> list[slice]:
    return [slice(s, min(s + size, total)) for s in range(0, total, size)]


def logits_in_chunks(run: Callable, x: np.ndarray, feeds, size: int) -> np.ndarray:
    """run(x_chunk, feeds_chunk) over chunks of `size` rows, cut to the real rows."""
    parts = []
    for rows in chunks(len(x), size):
        out = run(tiled(x, rows, size), padded_feeds(feeds, len(x), rows, size))
        parts.append(out[:rows.stop - rows.start])
    return np.concatenate(parts)


def gradients_in_chunks(run: Callable, x: np.ndarray, seed: np.ndarray, feeds,
                        size: int) -> tuple[np.ndarray, dict, dict]:
    """run(x_chunk, seed_chunk, feeds_chunk) -> (logits, grads, extras) over chunks of `size`
    rows. Per-row results are cut to the real rows; a gradient of a tensor without a batch
    dim is summed over the chunks (d(sum of seed . logits) over all rows), an extra output
    without one is taken from the first chunk."""
    logits, grads, extras, shared = [], {}, {}, {}
    for rows in chunks(len(x), size):
        n = rows.stop - rows.start
        out, g, e = run(tiled(x, rows, size), zero_padded(seed, rows, size),
                        padded_feeds(feeds, len(x), rows, size))
        logits.append(out[:n])
        for k, v in g.items():
            if v.ndim > 0 and len(v) == size:
                grads.setdefault(k, []).append(v[:n])
            else:
                shared[k] = shared[k] + v if k in shared else v
        for k, v in e.items():
            if v.ndim > 0 and len(v) == size:
                extras.setdefault(k, []).append(v[:n])
            else:
                shared.setdefault(k, v)
    joined = {k: np.concatenate(v) for k, v in {**grads, **extras}.items()}
    joined.update(shared)
    return (np.concatenate(logits), {k: joined[k] for k in g},
            {k: joined[k] for k in e})


def taps_in_chunks(run: Callable, x: np.ndarray, seed: np.ndarray,
                   size: int) -> tuple[np.ndarray, list, list]:
    """run(x_chunk, seed_chunk) -> (logits, [per-row arrays], [per-row arrays]) over chunks
    of `size` rows, each cut to the real rows and joined (the pathway's tap graph)."""
    logits, firsts, seconds = [], [], []
    for rows in chunks(len(x), size):
        n = rows.stop - rows.start
        out, a, b = run(tiled(x, rows, size), zero_padded(seed, rows, size))
        logits.append(out[:n])
        firsts.append([v[:n] for v in a])
        seconds.append([v[:n] for v in b])
    return (np.concatenate(logits), [np.concatenate(v) for v in zip(*firsts, strict=True)],
            [np.concatenate(v) for v in zip(*seconds, strict=True)])
