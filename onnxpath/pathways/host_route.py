"""The contribution pathway on the host, with nothing between its three steps that the map
does not need: the tap run; the selection, whose bracketing pass writes each Relu layer's
gate bits (and the prune marks of the other layers) as it finds t; and the gated gradient
from those buffers. No keep masks, no pass over the scores for their magnitude, no mask
arrays allocated per call. `methods.pathway` takes it for a fixed P with one threshold per
example on the CPU; `critical_pathway` builds a full `Pathway` (keep masks, activations) for
the rest, and the maps are the same bit for bit.

On ResNet-50 (2 threads, inside the call) the selection with its gates takes ~16 ms here,
against ~30 ms through keep masks (selection 23 ms, then gates 6 ms).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from onnxpath.pathways.network import MaskedNetwork, contributions
from onnxpath.pathways.selection import prune_marks


def fits(selection: str, prune_percent: float | str, per_layer: bool) -> bool:
    return selection == "contribution" and not per_layer and \
        not isinstance(prune_percent, str)


def run_on_host(net: MaskedNetwork, x: np.ndarray, targets: Sequence[int] | None,
                prune_percent: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(maps, logits, the masked network's logits, kept neurons per example), as
    `in_graph.run_in_one_graph` gives them. `targets` None explains each predicted class."""
    logits, signed, _ = contributions(net, x, targets)
    targets = logits.argmax(axis=1) if targets is None else np.asarray(targets)
    gates, marks = net.gate_buffers(len(x)), net.claim_marks(len(x))
    try:
        pruned = [prune_marks([s[i] for s in signed], prune_percent, [row(m, i) for m in marks],
                              [row(g, i) for g in gates], magnitude=True)[1]
                  for i in range(len(x))]
        keep = [None if m is None else ~m for m in marks]
        maps, masked_logits = net.gated_gradient(x, net.engine.seed(targets), gates, keep)
    finally:
        net.release_marks(len(x), marks)
    return maps, logits, masked_logits, net.neurons - np.asarray(pruned)


def row(array: np.ndarray | None, i: int) -> np.ndarray | None:
    return None if array is None else array[i]
