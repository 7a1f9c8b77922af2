"""Grad-CAM (Selvaraju et al. 2017) as Captum's LayerGradCam followed by
LayerAttribution.interpolate(..., "bilinear").

At a 4-D layer A (N, K, h, w): weights w_k = mean over (h, w) of d logit_c / d A_k, map =
sum_k w_k A_k, optionally ReLU'd (off by default, Captum's `relu_attributions=False`), then
upsampled bilinearly to the input's H x W. The gradient graph is taken with respect to the layer
tensor itself and also returns the layer's value, so one pass gives both.

The map is one channel; it is replicated across the input's C channels so that every method's
maps share the input's (N, C, H, W) shape.
"""

from __future__ import annotations

import numpy as np
import onnx

from onnxpath.autodiff.walk import value_infos
from onnxpath.engine.gradient import GradientEngine
from onnxpath.errors import UsageError
from onnxpath.methods import Attribution, method
from onnxpath.methods._common import bilinear_resize, single_pass

GLOBAL_POOLS = ("GlobalAveragePool", "GlobalMaxPool")
SPATIAL_REDUCES = ("ReduceMean", "ReduceMax", "ReduceSum")
FLATTENS = ("Flatten", "Reshape")


def _spatial(shape) -> tuple | None:
    return tuple(shape[2:]) if shape is not None and len(shape) == 4 else None


def find_layer(model: onnx.ModelProto, layer: str | None = None) -> str:
    """The tensor Grad-CAM looks at: `layer` (a tensor or node name), or else the input of the
    first node that collapses a 4-D map (global pooling, a spatial reduce, or a flatten). When
    that input is already 1 x 1, its producer's input is taken instead."""
    nodes = list(model.graph.node)
    tensors = {o for n in nodes for o in n.output} | {i.name for i in model.graph.input}
    if layer is not None:
        if layer in tensors:
            return layer
        by_name = [n.output[0] for n in nodes if n.name == layer]
        if by_name:
            return by_name[0]
        raise UsageError(f"--layer '{layer}' is neither a tensor nor a node of the model")
    infos = value_infos(model)
    producers = {o: n for n in nodes for o in n.output}
    for node in nodes:
        if not node.input:
            continue
        spatial = _spatial(infos.get(node.input[0], (0, None))[1])
        if spatial is None:
            continue
        out_shape = infos.get(node.output[0], (0, None))[1]
        collapses = (node.op_type in GLOBAL_POOLS or
                     (node.op_type in SPATIAL_REDUCES + FLATTENS and out_shape is not None and
                      (len(out_shape) < 4 or _spatial(out_shape) == (1, 1))))
        if not collapses:
            continue
        name = node.input[0]
        while spatial == (1, 1) and name in producers and producers[name].input:
            name = producers[name].input[0]
            spatial = _spatial(infos.get(name, (0, None))[1])
        if spatial is not None:
            return name
    raise UsageError("found no 4-D layer before a global pooling or flatten; pass --layer NAME")


@method("gradcam", picks_target=True)
def gradcam(engine: GradientEngine, x: np.ndarray, targets: np.ndarray | None, *,
            layer: str | None = None, relu: bool = False) -> Attribution:
    name = find_layer(engine.info.proto, layer)
    logits, grads, values = single_pass(engine, x, engine.seed(targets), wrt=[name],
                                        extra_outputs=[name])
    grad, activation = grads[name], values[name]
    if grad.ndim != 4:
        raise UsageError(f"Grad-CAM needs a 4-D (N, C, H, W) layer; '{name}' has shape "
                         f"{grad.shape}")
    weights = grad.mean(axis=(2, 3), keepdims=True, dtype=np.float64)
    cam = (weights * activation).sum(axis=1)
    if relu:
        cam = np.maximum(cam, 0.0)
    up = bilinear_resize(cam, x.shape[-2:])
    maps = np.repeat(up[:, None], x.shape[1], axis=1)
    return Attribution(maps, [{"layer": name, "layer_shape": list(activation.shape[1:])}
                              for _ in range(len(x))], logits=logits)
