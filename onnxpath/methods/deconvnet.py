"""Deconvnet (Zeiler & Fergus 2014): the gradient walk with each ReLU-family activation's
backward replaced by a Relu of the incoming gradient, ignoring the forward input (Captum's
Deconvolution hook). Captum hooks nn.ReLU modules only; ReLU6 (Clip with lower bound 0),
LeakyRelu and PRelu get the same rule here (see `relu_family`)."""

from __future__ import annotations

import numpy as np

from onnxpath.autodiff import GraphBuilder, Node
from onnxpath.autodiff.relu_family import is_relu_family
from onnxpath.autodiff.rules import RULES
from onnxpath.engine.gradient import GradientEngine
from onnxpath.methods import Attribution, method
from onnxpath.methods._common import single_pass


def deconv_relu(node: Node, dy, b: GraphBuilder):
    return [b.op("Relu", dy[0])]


def deconv_relu_family(node: Node, dy, b: GraphBuilder):
    """Relu(dy) for Clip (as ReLU6), LeakyRelu and PRelu; a Clip that is not ReLU-like
    (hardtanh) keeps its plain rule. Bounds and slopes get no gradient."""
    if not is_relu_family(node.op_type, node.attrs, lambda i: b.constant_value(node.input(i))):
        return RULES[node.op_type](node, dy, b)
    return [b.op("Relu", dy[0])] + [None] * (len(node.inputs) - 1)


DECONV = {"Relu": deconv_relu, "Clip": deconv_relu_family, "LeakyRelu": deconv_relu_family,
          "PRelu": deconv_relu_family}


@method("deconvnet", picks_target=True)
def deconvnet(engine: GradientEngine, x: np.ndarray, targets: np.ndarray | None) -> Attribution:
    logits, grads, _ = single_pass(engine, x, engine.seed(targets), overrides=DECONV)
    return Attribution(grads[engine.input_name], logits=logits)
