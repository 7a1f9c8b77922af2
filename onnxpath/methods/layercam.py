"""LayerCAM (Jiang et al. 2021): each element of the layer weighted by its own positive
gradient,

    cam_ij = sum_k ReLU(d Y_c / d A_ij^k) * A_ij^k

which stays reliable at shallow layers, where Grad-CAM's channel-averaged gradients blur (the
paper's eq. 4 and 5; pytorch-grad-cam's LayerCAM). The paper ReLUs the sum, which is the
`relu` option here (off, so that the raw map is the family's signed CAM; see `_cam`).
"""

from __future__ import annotations

import numpy as np

from onnxpath.engine.gradient import GradientEngine
from onnxpath.methods import Attribution, method
from onnxpath.methods._cam import cam_attribution, image_layer, layer_gradients


@method("layercam", picks_target=True)
def layercam(engine: GradientEngine, x: np.ndarray, targets: np.ndarray | None, *,
             layer: str | None = None, relu: bool = False) -> Attribution:
    name = image_layer(engine, x, layer, "LayerCAM")
    logits, grad, activation = layer_gradients(engine, x, targets, name, "LayerCAM")
    cam = (np.maximum(grad.astype(np.float64), 0.0) * activation).sum(axis=1)
    return cam_attribution(cam, x, name, activation, logits, relu)
