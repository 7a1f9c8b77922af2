"""`--prune auto`: per input, the sparsest pathway that keeps the prediction.

The authors choose the prune percentage P so that the masked network's output changes by about
15% (the relative change of the target's softmax probability, `network.output_change`). A
fixed P cannot do that for every input: at P = 85, EfficientNet-Lite0's output changes by over
90% on some photos. Here P is bisected per input over [0, 100] on the contribution scores
already computed, so each step costs one masked forward pass of the batch and no new scores.
The output change is not exactly monotone in P; the bisection keeps, per input, a P whose
change it measured within the bound (P = 0 when even the first step exceeds it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from onnxpath.pathways.network import MaskedNetwork, output_change
from onnxpath.pathways.selection import select

RESOLUTION = 1.0  # percentage points: 7 masked forward passes per batch


def masks_at(scores: Sequence[np.ndarray], prune_percents: np.ndarray,
             per_layer: bool) -> list[np.ndarray]:
    """Keep masks with a P of its own per example."""
    rows = [select([s[i:i + 1] for s in scores], float(p), per_layer)[0]
            for i, p in enumerate(prune_percents)]
    return [np.concatenate([row[k] for row in rows]) for k in range(len(scores))]


def largest_faithful_prune(net: MaskedNetwork, x: np.ndarray, scores: Sequence[np.ndarray],
                           logits: np.ndarray, targets: np.ndarray, max_change: float,
                           per_layer: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
    """((N,) the P chosen per example, its keep masks): the largest P found whose output
    change is at most `max_change` (a fraction)."""
    n = len(x)
    low, high = np.zeros(n), np.full(n, 100.0)  # low: within the bound (or 0); high: not
    while (high - low).max() > RESOLUTION:
        middle = (low + high) / 2
        masks = masks_at(scores, middle, per_layer)
        within = output_change(logits, net.logits(x, masks), targets) <= max_change
        low, high = np.where(within, middle, low), np.where(within, high, middle)
    return low, masks_at(scores, low, per_layer)
