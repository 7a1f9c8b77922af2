"""Eigen-CAM (Muhammad & Yeasin 2020): the layer's activations projected on their first
principal component. No gradient and no class: the map shows what the layer responds to most,
whatever the target.

Per example, the h*w positions are the samples and the K channels the features: M (hw x K)
with each channel's mean over the positions removed (pytorch-grad-cam's get_2d_projection
centres it so, though the paper does not), M = U S V^T, and cam = M v_1 (v_1 the first row of
V^T), reshaped to h x w.

The sign of a singular vector is arbitrary: LAPACK's choice can flip with a tiny change of the
input, and with it which side a ReLU or a colour scale keeps. onnxpath fixes it: v_1 is
oriented so that its loadings sum to a positive number. Since M^T M = V S^2 V^T, that is the
same as cam correlating positively with the activations summed over the channels, i.e. the
salient side is where the layer's units, taken together, fire more. pytorch-grad-cam keeps
whichever sign numpy returns.
"""

from __future__ import annotations

import numpy as np

from onnxpath.engine.gradient import GradientEngine
from onnxpath.methods import Attribution, method
from onnxpath.methods._cam import cam_attribution, image_layer, layer_values


def first_component_map(activation: np.ndarray) -> np.ndarray:
    """(K, h, w) activations -> the (h, w) projection on the first principal component, in
    onnxpath's sign convention (loadings summing to >= 0)."""
    channels = activation.shape[0]
    samples = np.nan_to_num(activation.reshape(channels, -1).T.astype(np.float64))
    samples = samples - samples.mean(axis=0)
    _, _, vt = np.linalg.svd(samples, full_matrices=False)
    component = vt[0] if vt[0].sum() >= 0 else -vt[0]
    return (samples @ component).reshape(activation.shape[1:])


@method("eigencam", needs_gradients=False, picks_target=True)
def eigencam(engine: GradientEngine, x: np.ndarray, targets: np.ndarray | None, *,
             layer: str | None = None, relu: bool = False) -> Attribution:
    name = image_layer(engine, x, layer, "Eigen-CAM")
    logits, activation = layer_values(engine, x, name, "Eigen-CAM")
    cam = np.stack([first_component_map(a) for a in activation])
    return cam_attribution(cam, x, name, activation, logits, relu)
