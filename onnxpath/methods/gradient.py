"""Gradient (saliency): d logit_c / d x. Signed by default; `absolute=True` is Captum's Saliency.

With `layer`, the gradient is taken at that inner tensor instead, d logit_c / d a_layer, with
the layer's shape (Captum's LayerGradientXActivation with multiply_by_inputs=False). With
`layer` and `neuron`, one element of the layer is explained instead of a logit,
d a_layer[neuron] / d x (Captum's NeuronGradient).
"""

from __future__ import annotations

import numpy as np

from onnxpath.engine.gradient import GradientEngine
from onnxpath.methods import Attribution, method
from onnxpath.methods._common import single_pass
from onnxpath.methods._layers import layer_and_neuron, layer_extras, layer_pass, neuron_gradient


@method("gradient", picks_target=True)
def gradient(engine: GradientEngine, x: np.ndarray, targets: np.ndarray | None, *,
             absolute: bool = False, layer: str | None = None, neuron=None) -> Attribution:
    layer, unit = layer_and_neuron(engine, layer, neuron)
    extras = []
    if unit is not None:
        maps, logits, extras = neuron_gradient(engine, x, unit)
    elif layer is not None:
        logits, maps, _ = layer_pass(engine, x, engine.seed(targets), layer, values=False)
        extras = layer_extras(layer, maps.shape[1:], len(x))
    else:
        logits, grads, _ = single_pass(engine, x, engine.seed(targets))
        maps = grads[engine.input_name]
    return Attribution(np.abs(maps) if absolute else maps, extras, logits=logits)
