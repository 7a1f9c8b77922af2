"""Grad-CAM (Selvaraju et al. 2017) as Captum's LayerGradCam followed by
LayerAttribution.interpolate(..., "bilinear").

At a 4-D layer A (N, K, h, w): weights w_k = mean over (h, w) of d logit_c / d A_k, map =
sum_k w_k A_k, optionally ReLU'd (off by default, Captum's `relu_attributions=False`), then
upsampled bilinearly to the input's H x W. The gradient graph is taken with respect to the layer
tensor itself and also returns the layer's value, so one pass gives both.

The map is one channel; it is replicated across the input's C channels so that every method's
maps share the input's shape. The layer search and the last steps are the CAM family's
(`_cam`); like the rest of the family it refuses a table or text model in one line (a token
sequence's 4-D attention scores are no image grid, and their "map" was constant over tokens).
"""

from __future__ import annotations

import numpy as np

from onnxpath.engine.gradient import GradientEngine
from onnxpath.methods import Attribution, method
from onnxpath.methods._cam import (
    cam_attribution,
    channel_weighted,
    find_layer,
    image_layer,
    layer_gradients,
)

__all__ = ["find_layer", "gradcam"]


@method("gradcam", picks_target=True)
def gradcam(engine: GradientEngine, x: np.ndarray, targets: np.ndarray | None, *,
            layer: str | None = None, relu: bool = False) -> Attribution:
    name = image_layer(engine, x, layer, "Grad-CAM")
    logits, grad, activation = layer_gradients(engine, x, targets, name, "Grad-CAM")
    weights = grad.mean(axis=(2, 3), dtype=np.float64)
    cam = channel_weighted(weights, activation)
    return cam_attribution(cam, x, name, activation, logits, relu)
