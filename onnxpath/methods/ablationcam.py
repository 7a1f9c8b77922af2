"""Ablation-CAM (Desai & Ramaswamy 2020): a channel's weight is the share of the class score
that is lost when the channel is switched off,

    w_k = (y_c - y_c^k) / y_c

where y_c is the target's pre-softmax logit and y_c^k the logit with channel k of the layer set
to zero (the paper's ablation; pytorch-grad-cam's AblationCAM does the same on a layer whose
minimum is 0, such as a ReLU's output, and otherwise sets the channel far below the minimum,
which onnxpath does not copy). cam = sum_k w_k A^k; the raw map is signed (`relu` off), see
`_cam`.

Only the network's tail runs per ablated channel: the layer is made a graph input of a cut
copy of the model (`_cam.tail_model`), fed `internal_batch_size` ablated copies at a time.
"""

from __future__ import annotations

import numpy as np

from onnxpath.engine.gradient import GradientEngine
from onnxpath.methods import Attribution, method
from onnxpath.methods._cam import (
    cam_attribution,
    channel_weighted,
    chunks,
    image_layer,
    layer_values,
    tail_logits,
    targets_or_argmax,
)
from onnxpath.methods._common import pick


@method("ablationcam", needs_gradients=False, picks_target=True)
def ablationcam(engine: GradientEngine, x: np.ndarray, targets: np.ndarray | None, *,
                layer: str | None = None, relu: bool = False,
                internal_batch_size: int | None = 32) -> Attribution:
    name = image_layer(engine, x, layer, "Ablation-CAM")
    logits, activation = layer_values(engine, x, name, "Ablation-CAM")
    targets = targets_or_argmax(targets, logits)
    channels = activation.shape[1]
    ablated = np.zeros((len(x), channels))
    for i, example in enumerate(x):
        for part in chunks(channels, engine, internal_batch_size):
            copies = np.repeat(activation[i:i + 1], part.stop - part.start, axis=0)
            copies[np.arange(len(copies)), np.arange(part.start, part.stop)] = 0.0
            inputs = np.repeat(example[None], len(copies), axis=0)
            ablated[i, part] = tail_logits(engine, name, copies, inputs)[:, targets[i]]
    score = pick(logits, targets).astype(np.float64)[:, None]
    weights = (score - ablated) / score
    return cam_attribution(channel_weighted(weights, activation), x, name, activation, logits,
                           relu)
