"""Deconvnet (Zeiler & Fergus 2014): the gradient walk with each Relu's backward replaced by a
Relu of the incoming gradient, ignoring the forward input (Captum's Deconvolution)."""

from __future__ import annotations

import numpy as np

from ..autodiff import GraphBuilder, Node
from ..engine import GradientEngine
from . import Attribution, method
from ._common import single_pass


def deconv_relu(node: Node, dy, b: GraphBuilder):
    return [b.op("Relu", dy[0])]


@method("deconvnet", picks_target=True)
def deconvnet(engine: GradientEngine, x: np.ndarray, targets: np.ndarray | None) -> Attribution:
    logits, grads, _ = single_pass(engine, x, engine.seed(targets),
                                   overrides={"Relu": deconv_relu})
    return Attribution(grads[engine.input_name], logits=logits)
