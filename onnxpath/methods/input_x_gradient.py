"""Input x gradient (Shrikumar et al. 2016): x * d logit_c / d x, Captum's InputXGradient.

With `layer`, activation x gradient at that inner tensor, a_layer * d logit_c / d a_layer, with
the layer's shape (Captum's LayerGradientXActivation). With `layer` and `neuron`, one element of
the layer is explained instead of a logit: x * d a_layer[neuron] / d x.
"""

from __future__ import annotations

import numpy as np

from onnxpath.engine.gradient import GradientEngine
from onnxpath.methods import Attribution, method
from onnxpath.methods._common import single_pass
from onnxpath.methods._layers import layer_and_neuron, layer_extras, layer_pass, neuron_gradient


@method("input-x-gradient", picks_target=True)
def input_x_gradient(engine: GradientEngine, x: np.ndarray, targets: np.ndarray | None, *,
                     layer: str | None = None, neuron=None) -> Attribution:
    layer, unit = layer_and_neuron(engine, layer, neuron)
    if unit is not None:
        grad, logits, extras = neuron_gradient(engine, x, unit)
        return Attribution(x * grad, extras, logits=logits)
    if layer is not None:
        logits, grad, activation = layer_pass(engine, x, engine.seed(targets), layer)
        return Attribution(activation * grad, layer_extras(layer, grad.shape[1:], len(x)),
                           logits=logits)
    logits, grads, _ = single_pass(engine, x, engine.seed(targets))
    return Attribution(x * grads[engine.input_name], logits=logits)
