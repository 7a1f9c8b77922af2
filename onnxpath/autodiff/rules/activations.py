"""Pointwise activations. Piecewise-linear ones gate by a comparison on the forward tensors."""

from __future__ import annotations

from ..builder import GraphBuilder, Node
from . import rule


def _gate(b: GraphBuilder, dy: str, condition: str) -> str:
    return b.op("Where", condition, dy, b.scalar(0.0))


@rule("Relu")
def relu(node: Node, dy, b: GraphBuilder):
    # Subgradient 0 at x == 0, as torch does.
    return [_gate(b, dy[0], b.op("Greater", node.inputs[0], b.scalar(0.0)))]


@rule("LeakyRelu")
def leaky_relu(node: Node, dy, b: GraphBuilder):
    alpha = node.attr("alpha", 0.01)
    positive = b.op("Greater", node.inputs[0], b.scalar(0.0))
    return [b.op("Where", positive, dy[0], b.op("Mul", dy[0], b.scalar(alpha)))]


@rule("Clip")
def clip(node: Node, dy, b: GraphBuilder):
    # Pass the gradient strictly inside (min, max); torch's hardtanh/ReLU6 do the same.
    x = node.inputs[0]
    inside = None
    if node.input(1):
        inside = b.op("Greater", x, node.inputs[1])
    if node.input(2):
        below = b.op("Less", x, node.inputs[2])
        inside = below if inside is None else b.op("And", inside, below)
    return [dy[0] if inside is None else _gate(b, dy[0], inside)]


@rule("Sigmoid")
def sigmoid(node: Node, dy, b: GraphBuilder):
    y = node.outputs[0]
    slope = b.op("Mul", y, b.op("Sub", b.scalar(1.0), y))
    return [b.op("Mul", dy[0], slope)]


@rule("Tanh")
def tanh(node: Node, dy, b: GraphBuilder):
    y = node.outputs[0]
    slope = b.op("Sub", b.scalar(1.0), b.op("Mul", y, y))
    return [b.op("Mul", dy[0], slope)]


@rule("Softmax")
def softmax(node: Node, dy, b: GraphBuilder):
    # dx = y * (dy - sum(dy * y)) along the softmax axis (opset >= 13 semantics).
    y = node.outputs[0]
    axis = node.attr("axis", -1)
    dot = b.reduce_sum(b.op("Mul", dy[0], y), [axis], keepdims=True)
    return [b.op("Mul", y, b.op("Sub", dy[0], dot))]
