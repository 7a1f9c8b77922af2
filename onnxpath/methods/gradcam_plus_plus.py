"""Grad-CAM++ (Chattopadhay et al. 2018): Grad-CAM's channel weights with pixel-wise
coefficients, so that several instances of a class each count.

With g = d Y_c / d A^k (Y_c the class logit), eq. 19 of the paper, for the score exp(Y_c):

    alpha_ij^k = g_ij^2 / (2 g_ij^2 + sum_ab A_ab^k g_ij^3)
    w_k = sum_ij alpha_ij^k ReLU(g_ij)

The exponential turns the second and third derivatives into powers of the first (exact for a
piecewise-linear network), and its common factor exp(Y_c) cancels out of alpha and scales every
w_k alike, so it is left out, as pytorch-grad-cam's GradCAMPlusPlus does. As there, alpha is 0
where g is 0 (the 0/0 of eq. 19) and the denominator carries eps = 1e-6.

cam = sum_k w_k A^k; the raw map is signed (`relu` off), see `_cam`.
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

EPS = 1e-6


@method("gradcam-plus-plus", picks_target=True)
def gradcam_plus_plus(engine: GradientEngine, x: np.ndarray, targets: np.ndarray | None, *,
                      layer: str | None = None, relu: bool = False) -> Attribution:
    name = image_layer(engine, x, layer, "Grad-CAM++")
    logits, grad, activation = layer_gradients(engine, x, targets, name, "Grad-CAM++")
    g = grad.astype(np.float64)
    total = activation.sum(axis=(2, 3), keepdims=True, dtype=np.float64)
    alpha = g ** 2 / (2 * g ** 2 + total * g ** 3 + EPS)
    alpha = np.where(g != 0, alpha, 0.0)
    weights = (np.maximum(g, 0.0) * alpha).sum(axis=(2, 3))
    return cam_attribution(channel_weighted(weights, activation), x, name, activation, logits,
                           relu)
