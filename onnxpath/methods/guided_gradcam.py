"""Guided Grad-CAM (Selvaraju et al. 2017, sec. 3.1): Grad-CAM's class-discriminative but
coarse map multiplied, pixel by pixel, with Guided Backpropagation's fine but hardly
class-discriminative one.

    map = guided_backprop(x) * upsample(ReLU(Grad-CAM at the layer))

as Captum's GuidedGradCam computes it (its Grad-CAM with relu_attributions=True), with the
paper's bilinear upsampling (Captum's default is "nearest"; pass interpolate_mode="bilinear"
to compare). The map keeps the input's channels: guided backprop's gradient is per channel.
Two gradient runs: the plain graph at the layer, and the guided graph at the input.
"""

from __future__ import annotations

import numpy as np

from onnxpath.engine.gradient import GradientEngine
from onnxpath.methods import Attribution, method
from onnxpath.methods._cam import (
    channel_weighted,
    image_layer,
    image_size,
    layer_gradients,
    spread,
)
from onnxpath.methods._common import bilinear_resize, single_pass
from onnxpath.methods.guided_backprop import GUIDED


@method("guided-gradcam", picks_target=True)
def guided_gradcam(engine: GradientEngine, x: np.ndarray, targets: np.ndarray | None, *,
                   layer: str | None = None, relu: bool = True) -> Attribution:
    name = image_layer(engine, x, layer, "Guided Grad-CAM")
    logits, grad, activation = layer_gradients(engine, x, targets, name, "Guided Grad-CAM")
    if targets is None:
        targets = logits.argmax(axis=1)
    cam = channel_weighted(grad.mean(axis=(2, 3), dtype=np.float64), activation)
    if relu:
        cam = np.maximum(cam, 0.0)
    _, guided, _ = single_pass(engine, x, engine.seed(targets), overrides=GUIDED)
    maps = guided[engine.input_name] * spread(bilinear_resize(cam, image_size(x)), x)
    return Attribution(maps, [{"layer": name, "layer_shape": list(activation.shape[1:])}
                              for _ in range(len(x))], logits=logits)
