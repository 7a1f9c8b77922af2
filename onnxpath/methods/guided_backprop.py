"""Guided Backpropagation (Springenberg et al. 2015): the plain gradient walk with one rule
swapped. Through each Relu, only positive gradients pass, and only where the forward input
was positive: Relu(dy * [x > 0]), Captum's GuidedBackprop hook."""

from __future__ import annotations

import numpy as np

from ..autodiff import GraphBuilder, Node
from ..engine import GradientEngine
from . import Attribution, method
from ._common import single_pass


def guided_relu(node: Node, dy, b: GraphBuilder):
    gated = b.op("Where", b.op("Greater", node.inputs[0], b.scalar(0.0)), dy[0], b.scalar(0.0))
    return [b.op("Relu", gated)]


@method("guided-backprop", picks_target=True)
def guided_backprop(engine: GradientEngine, x: np.ndarray,
                    targets: np.ndarray | None) -> Attribution:
    logits, grads, _ = single_pass(engine, x, engine.seed(targets),
                                   overrides={"Relu": guided_relu})
    return Attribution(grads[engine.input_name], logits=logits)
