"""Guided Backpropagation (Springenberg et al. 2015): the plain gradient walk with one rule
swapped. Through each Relu, only positive gradients pass, and only where the forward input
was positive: Relu(dy * [x > 0]), Captum's GuidedBackprop hook.

ReLU6 networks (MobileNet, EfficientNet-Lite) export their rectifier as Clip(x, 0, 6); there the
same rule is Relu(dy * [0 < x < 6]): Clip's own gradient with only positive values passed."""

from __future__ import annotations

import numpy as np

from ..autodiff import GraphBuilder, Node
from ..autodiff.rules.activations import clip
from ..engine import GradientEngine
from . import Attribution, method
from ._common import single_pass


def guided_relu(node: Node, dy, b: GraphBuilder):
    gated = b.op("Where", b.op("Greater", node.inputs[0], b.scalar(0.0)), dy[0], b.scalar(0.0))
    return [b.op("Relu", gated)]


def guided_clip(node: Node, dy, b: GraphBuilder):
    return [b.op("Relu", clip(node, dy, b)[0])]


@method("guided-backprop", picks_target=True)
def guided_backprop(engine: GradientEngine, x: np.ndarray,
                    targets: np.ndarray | None) -> Attribution:
    logits, grads, _ = single_pass(engine, x, engine.seed(targets),
                                   overrides={"Relu": guided_relu,
                                                         "Clip": guided_clip})
    return Attribution(grads[engine.input_name], logits=logits)
