"""XGrad-CAM (Fu et al. 2020, "Axiom-based Grad-CAM"): channel weights chosen to satisfy the
sensitivity and conservation axioms, which makes each gradient count in proportion to the
activation it meets:

    w_k = sum_ij (A_ij^k / sum_ab A_ab^k) d Y_c / d A_ij^k

as in pytorch-grad-cam's XGradCAM, whose eps = 1e-7 in the denominator keeps an all-zero
channel at weight 0. cam = sum_k w_k A^k; the raw map is signed (`relu` off), see `_cam`.
"""

from __future__ import annotations

import numpy as np

from onnxpath.engine.gradient import GradientEngine
from onnxpath.methods import Attribution, method
from onnxpath.methods._cam import (
    cam_attribution,
    channel_weighted,
    image_layer,
    layer_gradients,
)

EPS = 1e-7


@method("xgradcam", picks_target=True)
def xgradcam(engine: GradientEngine, x: np.ndarray, targets: np.ndarray | None, *,
             layer: str | None = None, relu: bool = False) -> Attribution:
    name = image_layer(engine, x, layer, "XGrad-CAM")
    logits, grad, activation = layer_gradients(engine, x, targets, name, "XGrad-CAM")
    a = activation.astype(np.float64)
    total = a.sum(axis=(2, 3), keepdims=True)
    weights = (grad * a / (total + EPS)).sum(axis=(2, 3))
    return cam_attribution(channel_weighted(weights, activation), x, name, activation, logits,
                           relu)
