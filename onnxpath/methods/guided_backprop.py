"""Guided Backpropagation (Springenberg et al. 2015): the plain gradient walk with the rule of
every ReLU-family activation swapped. Through each one, only positive gradients pass, and only
where the activation's own gradient lets them: Relu(activation's backward(dy)), Captum's
GuidedBackprop hook on the activation module. Captum hooks nn.ReLU modules only; here ReLU6
(Clip with lower bound 0), LeakyRelu and PRelu get the same hook (see `relu_family`)."""

from __future__ import annotations

import numpy as np

from onnxpath.autodiff import GraphBuilder, Node
from onnxpath.autodiff.relu_family import is_relu_family
from onnxpath.autodiff.rules import RULES
from onnxpath.engine.gradient import GradientEngine
from onnxpath.methods import Attribution, method
from onnxpath.methods._common import single_pass


def guided_relu(node: Node, dy, b: GraphBuilder):
    gated = b.op("Where", b.op("Greater", node.inputs[0], b.scalar(0.0)), dy[0], b.scalar(0.0))
    return [b.op("Relu", gated)]


def guided_relu_family(node: Node, dy, b: GraphBuilder):
    """Clip (as ReLU6), LeakyRelu, PRelu: Relu of the op's own input gradient. A Clip that is
    not ReLU-like (hardtanh) keeps its plain rule."""
    grads = RULES[node.op_type](node, dy, b)
    if not is_relu_family(node.op_type, node.attrs, lambda i: b.constant_value(node.input(i))):
        return grads
    return [b.op("Relu", grads[0]), *grads[1:]]


GUIDED = {"Relu": guided_relu, "Clip": guided_relu_family, "LeakyRelu": guided_relu_family,
          "PRelu": guided_relu_family}


@method("guided-backprop", picks_target=True)
def guided_backprop(engine: GradientEngine, x: np.ndarray,
                    targets: np.ndarray | None) -> Attribution:
    logits, grads, _ = single_pass(engine, x, engine.seed(targets), overrides=GUIDED)
    return Attribution(grads[engine.input_name], logits=logits)
