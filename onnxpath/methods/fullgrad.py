"""FullGrad (Srinivas & Fleuret 2019): the input-gradient plus the gradient with respect to
every bias of the network, each turned into a map and summed. Together they add up to the
output exactly (the full-gradient decomposition, f(x) = grad_x f . x + sum_b grad_b f . b for
a piecewise-linear network); the saliency map keeps their spatial parts:

    S = psi(grad_x f * x) + sum_layers sum_channels psi(grad_b f * b)

where grad_b f * b of channel c of a layer is b_c times the gradient at that layer's output
(the bias is added at every position), and psi takes the absolute value, scales each channel
of each example to [0, 1] by its own minimum and maximum (eps 1e-7, as pytorch-grad-cam's
scale_cam_image) and resizes it bilinearly to the input's H x W. The layers with a spatial
bias are the Conv and ConvTranspose nodes that have one and the BatchNormalization nodes
(bias B - mean * scale / sqrt(var + eps)): the paper's and pytorch-grad-cam's Conv2d and
BatchNorm2d (a BatchNorm folded into its Conv at export carries the same bias there). A
fully connected layer's bias has no spatial extent and is left out, as in both.

The map is S scaled to [0, 1] per image by its minimum and maximum, pytorch-grad-cam's
output itself: S's offset carries no meaning (every channel of every layer adds its own
scaled map, 0 at that channel's minimum), and left in it would wash out the rendered map. One
channel replicated across the input's. It has no layer: the `layer` option does not apply.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from onnxpath.autodiff.relu_family import graph_constants
from onnxpath.autodiff.walk import value_infos
from onnxpath.engine.gradient import GradientEngine
from onnxpath.methods import Attribution, method
from onnxpath.methods._cam import channels_last, image_size, require_image, spread
from onnxpath.methods._common import bilinear_resize, single_pass

EPS = 1e-7
CONVS = ("Conv", "ConvTranspose")


def spatial_biases(model: onnx.ModelProto, folder=None) -> dict[str, np.ndarray]:
    """{output tensor: per-channel bias} of every Conv/ConvTranspose with a constant bias and
    every BatchNormalization with constant parameters, whose output is 4-D."""
    constants = graph_constants(model.graph)
    infos = value_infos(model)

    def value(name: str) -> np.ndarray | None:
        tensor = constants.get(name)
        if tensor is None:
            return None
        return numpy_helper.to_array(tensor, base_dir=str(folder or "")).astype(np.float64)

    biases = {}
    for node in model.graph.node:
        shape = infos.get(node.output[0], (0, None))[1] if node.output else None
        if shape is None or len(shape) != 4:
            continue
        if node.op_type in CONVS and len(node.input) > 2 and node.input[2]:
            bias = value(node.input[2])
        elif node.op_type == "BatchNormalization":
            scale, shift, mean, var = (value(i) for i in node.input[1:5])
            if any(v is None for v in (scale, shift, mean, var)):
                continue
            eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
            bias = shift - mean * scale / np.sqrt(var + eps)
        else:
            continue
        if bias is not None:
            biases[node.output[0]] = bias
    return biases


def scaled(maps: np.ndarray) -> np.ndarray:
    """Each map (over the last two axes) minus its minimum, over eps + the maximum left."""
    shifted = maps - maps.min(axis=(-2, -1), keepdims=True)
    return shifted / (EPS + shifted.max(axis=(-2, -1), keepdims=True))


def scaled_sum(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """psi summed over the channels: (N, K, h, w) non-negative maps, each (n, k) scaled to
    [0, 1], summed over k and resized to `size`. Resizing is linear, so summing first gives
    the sum of the resized channels at the cost of one resize."""
    total = scaled(maps).sum(axis=1)
    return total if total.shape[-2:] == tuple(size) else bilinear_resize(total, size)


@method("fullgrad", picks_target=True)
def fullgrad(engine: GradientEngine, x: np.ndarray,
             targets: np.ndarray | None) -> Attribution:
    require_image(engine, x, "FullGrad")
    biases = spatial_biases(engine.info.proto, engine.info.folder)
    wrt = [engine.input_name, *biases]
    logits, grads, _ = single_pass(engine, x, engine.seed(targets), wrt=wrt)
    size = image_size(x)
    input_term = np.abs(grads[engine.input_name].astype(np.float64) * x)
    if channels_last(x):
        input_term = input_term.transpose(0, 3, 1, 2)
    saliency = scaled_sum(input_term, size)
    for name, bias in biases.items():
        saliency += scaled_sum(np.abs(bias[None, :, None, None] * grads[name]), size)
    maps = spread(scaled(saliency), x)
    return Attribution(maps, [{"bias_layers": len(biases)} for _ in range(len(x))],
                       logits=logits)
