"""RISE (Petsiuk et al. 2018): randomised input sampling, forward runs only.

`masks` random binary grids of `cells` x `cells` (each cell kept with `probability`) are
upsampled bilinearly to (cells + 1) x cell size, shifted at random by up to one cell and cropped
to the input; the saliency is sum_i score_i * M_i / (masks * probability), where score_i is the
target's softmax probability on x * M_i, as in the paper. Multiplying by the mask moves pixels
towards 0, the dataset mean in a normalised input space. The map is one channel, replicated
across C. Grids and shifts are drawn up front from `seed`; the masks themselves are built batch by
batch, vectorised, while the previous batch runs (`batching.py`), so memory does not grow with
`masks`.
"""

from __future__ import annotations

import math

import numpy as np

from onnxpath.engine.batching import engine_rows
from onnxpath.engine.gradient import GradientEngine
from onnxpath.errors import UsageError
from onnxpath.methods import Attribution, method
from onnxpath.methods._common import _linear_weights, row_chunks, softmax


def rise_masks(grids: np.ndarray, shifts: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(M, H, W) float masks from (M, cells, cells) binary grids and (M, 2) pixel shifts:
    bilinear upsampling (F.interpolate, align_corners=False) as two matrix products, then each
    mask's crop gathered by index arrays, no per-mask loop."""
    cells = grids.shape[-1]
    cell_h, cell_w = math.ceil(size[0] / cells), math.ceil(size[1] / cells)
    rows = _linear_weights(cells, (cells + 1) * cell_h)
    cols = _linear_weights(cells, (cells + 1) * cell_w)
    # Only the rows and columns each crop keeps are interpolated.
    ys = shifts[:, :1] + np.arange(size[0])  # (M, H)
    xs = shifts[:, 1:] + np.arange(size[1])  # (M, W)
    return (rows[ys] @ grids.astype(np.float64) @ cols[xs].transpose(0, 2, 1)).astype(np.float32)


@method("rise", needs_gradients=False)
def rise(engine: GradientEngine, x: np.ndarray, targets: np.ndarray, *,
         masks: int = 1000, cells: int = 7, probability: float = 0.5, seed: int | None = 0,
         internal_batch_size: int | None = None) -> Attribution:
    """`internal_batch_size` None runs the batch size measured fastest for the model."""
    if masks < 1 or cells < 1 or not 0 < probability <= 1:
        raise UsageError("RISE needs --rise-masks >= 1, --cells >= 1 and 0 < --probability <= 1")
    size = x.shape[-2:] if x.ndim >= 3 else (1, x.shape[-1])  # a table row: a 1×F strip
    rng = np.random.default_rng(seed)
    grids = rng.random((masks, cells, cells)) < probability
    cell = (math.ceil(size[0] / cells), math.ceil(size[1] / cells))
    shifts = np.stack([rng.integers(0, cell[0], masks), rng.integers(0, cell[1], masks)], 1)
    n = len(x)
    # How one mask broadcasts over an example: over channels for images (1×H×W), the whole of
    # a C×T series, or a table row's F features (the 1×F strip flattened).
    tail = x.shape[-min(2, x.ndim - 1):]
    mask_shape = (*[1] * (x.ndim - 1 - len(tail)), *tail)
    spatial = (-1, *mask_shape)

    def masked(start: int, stop: int, out: np.ndarray) -> None:
        # Rows are (mask, example) pairs, mask-major: row r is mask r // n on example r % n.
        rows = np.arange(start, stop)
        first = start // n
        chunk = rise_masks(grids[first:(stop - 1) // n + 1], shifts[first:(stop - 1) // n + 1],
                           size)
        np.multiply(np.take(x, rows % n, axis=0, mode="clip"),
                    chunk[rows // n - first].reshape(spatial), out=out)

    logits = engine_rows(engine, masks * n, x.shape[1:], masked, internal_batch_size)
    probs = softmax(logits.astype(np.float64))
    scores = probs[np.arange(len(probs)), np.tile(targets, masks)].reshape(masks, n)
    saliency = np.zeros((n, *size), dtype=np.float64)
    for part in row_chunks(masks, 64):  # the masks again, a chunk at a time: bounded memory
        saliency += np.einsum("me,mhw->ehw", scores[part],
                              rise_masks(grids[part], shifts[part], size))
    saliency /= masks * probability
    maps = np.broadcast_to(saliency.reshape(len(x), *mask_shape), x.shape)
    return Attribution(maps, [{"masks": masks} for _ in range(len(x))])
