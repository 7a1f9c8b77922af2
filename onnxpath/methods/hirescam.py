"""HiResCAM (Draelos & Carin 2020): Grad-CAM without the spatial averaging of the gradient.
Each element of the layer keeps its own gradient:

    cam_ij = sum_k d Y_c / d A_ij^k * A_ij^k

so that, when only the layer's spatial grid separates it from the score (a CAM-style head),
the map shows exactly where the model looked, a guarantee Grad-CAM's averaged weights lose.
It is pytorch-grad-cam's HiResCAM; the raw map is signed (`relu` off), see `_cam`.
"""

from __future__ import annotations

import numpy as np

from onnxpath.engine.gradient import GradientEngine
from onnxpath.methods import Attribution, method
from onnxpath.methods._cam import cam_attribution, image_layer, layer_gradients


@method("hirescam", picks_target=True)
def hirescam(engine: GradientEngine, x: np.ndarray, targets: np.ndarray | None, *,
             layer: str | None = None, relu: bool = False) -> Attribution:
    name = image_layer(engine, x, layer, "HiResCAM")
    logits, grad, activation = layer_gradients(engine, x, targets, name, "HiResCAM")
    cam = (grad.astype(np.float64) * activation).sum(axis=1)
    return cam_attribution(cam, x, name, activation, logits, relu)
