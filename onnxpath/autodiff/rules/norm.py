"""Normalisation layers in inference mode: fixed statistics make them per-channel affine maps."""

from __future__ import annotations

from ..builder import GraphBuilder, Node
from . import rule


@rule("BatchNormalization")
def batch_norm(node: Node, dy, b: GraphBuilder):
    if node.attr("training_mode", 0):
        raise NotImplementedError("BatchNormalization in training mode")
    x, scale, _, _, var = node.inputs[:5]
    eps = node.attr("epsilon", 1e-5)
    factor = b.op("Div", scale, b.op("Sqrt", b.op("Add", var, b.scalar(eps))))
    trailing = list(range(1, b.rank(x) - 1))
    if trailing:
        factor = b.op("Unsqueeze", factor, b.ints(trailing))
    return [b.op("Mul", dy[0], factor), None, None, None, None]
