"""RISE (Petsiuk et al. 2018): randomised input sampling, forward runs only.

`masks` random binary grids of `cells` x `cells` (each cell kept with `probability`) are
upsampled bilinearly to (cells + 1) x cell size, shifted at random by up to one cell and cropped
to the input; the saliency is sum_i score_i * M_i / (masks * probability), where score_i is the
target's softmax probability on x * M_i, as in the paper. Multiplying by the mask moves pixels
towards 0, the dataset mean in a normalised input space. The map is one channel, replicated
across C. Grids and shifts are drawn up front from `seed`; the masks themselves are built chunk
by chunk, so memory does not grow with `masks`.
"""

from __future__ import annotations

import math

import numpy as np

from ..engine import GradientEngine
from ..errors import UsageError
from . import Attribution, method
from ._common import bilinear_resize, logits_rows, row_chunks, softmax


def rise_masks(grids: np.ndarray, shifts: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(M, H, W) float masks from (M, cells, cells) binary grids and (M, 2) pixel shifts."""
    cells = grids.shape[-1]
    cell_h, cell_w = math.ceil(size[0] / cells), math.ceil(size[1] / cells)
    big = bilinear_resize(grids.astype(np.float32), ((cells + 1) * cell_h, (cells + 1) * cell_w))
    return np.stack([big[i, dy:dy + size[0], dx:dx + size[1]]
                     for i, (dy, dx) in enumerate(shifts)]).astype(np.float32)


@method("rise", needs_gradients=False)
def rise(engine: GradientEngine, x: np.ndarray, targets: np.ndarray, *,
         masks: int = 1000, cells: int = 7, probability: float = 0.5, seed: int | None = 0,
         internal_batch_size: int | None = 32) -> Attribution:
    if masks < 1 or cells < 1 or not 0 < probability <= 1:
        raise UsageError("RISE needs --masks >= 1, --cells >= 1 and 0 < --probability <= 1")
    size = x.shape[-2:] if x.ndim >= 3 else (1, x.shape[-1])  # a table row: a 1×F strip
    rng = np.random.default_rng(seed)
    grids = rng.random((masks, cells, cells)) < probability
    cell = (math.ceil(size[0] / cells), math.ceil(size[1] / cells))
    shifts = np.stack([rng.integers(0, cell[0], masks), rng.integers(0, cell[1], masks)], 1)
    saliency = np.zeros((len(x), *size), dtype=np.float64)
    # Chunks of masks, each applied to every example: batch rows = chunk x examples.
    per_chunk = max(1, (internal_batch_size or masks * len(x)) // len(x))
    for part in row_chunks(masks, per_chunk):
        chunk = rise_masks(grids[part], shifts[part], size)
        shaped = chunk.reshape(len(chunk), 1, *(1,) * (x.ndim - 3), *x.shape[-min(2, x.ndim - 1):])
        masked = (x[None] * shaped).reshape(-1, *x.shape[1:])
        probs = softmax(logits_rows(engine, masked, internal_batch_size).astype(np.float64))
        scores = probs[np.arange(len(masked)), np.tile(targets, len(chunk))]
        saliency += np.einsum("me,mhw->ehw", scores.reshape(len(chunk), len(x)), chunk)
    saliency /= masks * probability
    maps = np.broadcast_to(saliency.reshape(len(x), *(1,) * (x.ndim - 3),
                                            *x.shape[-min(2, x.ndim - 1):]), x.shape)
    return Attribution(maps, [{"masks": masks} for _ in range(len(x))])
