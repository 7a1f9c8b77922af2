"""Pointwise activations. Piecewise-linear ones gate by a comparison on the forward tensors."""

from __future__ import annotations

import math

from onnxpath.autodiff.builder import GraphBuilder, Node
from onnxpath.autodiff.rules import rule


def _gate(b: GraphBuilder, dy: str, condition: str) -> str:
    # A multiply by the cast condition runs faster in ONNX Runtime than Where (measured: Where
    # was 17% of a ResNet-50 gradient graph's time).
    return b.op("Mul", dy, b.op("Cast", condition, to=b.float_type))


@rule("Relu")
def relu(node: Node, dy, b: GraphBuilder):
    # Gate on the output (y > 0 iff x > 0; subgradient 0 at x == 0, as torch does): then the
    # backward never reads the Relu's input, and ONNX Runtime can fuse Conv+Relu forward.
    # (Sign(y) would do as the gate too, but measured slower than Greater + Cast.)
    return [_gate(b, dy[0], b.op("Greater", node.outputs[0], b.scalar(0.0)))]


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


def _softmax_axes(node: Node, b: GraphBuilder) -> list[int]:
    # Opset >= 13 semantics (the walker requires it): `axis` alone, not all trailing axes.
    return [node.attr("axis", -1) % b.rank(node.inputs[0])]


@rule("Softmax")
def softmax(node: Node, dy, b: GraphBuilder):
    # dx = y * (dy - sum(dy * y)) over the softmax axes.
    y = node.outputs[0]
    dot = b.reduce_sum(b.op("Mul", dy[0], y), _softmax_axes(node, b), keepdims=True)
    return [b.op("Mul", y, b.op("Sub", dy[0], dot))]


@rule("LogSoftmax")
def log_softmax(node: Node, dy, b: GraphBuilder):
    # dx = dy - softmax(x) * sum(dy) over the softmax axes, with softmax(x) = exp(y).
    total = b.reduce_sum(dy[0], _softmax_axes(node, b), keepdims=True)
    return [b.op("Sub", dy[0], b.op("Mul", b.op("Exp", node.outputs[0]), total))]


@rule("Softplus")
def softplus(node: Node, dy, b: GraphBuilder):
    return [b.op("Mul", dy[0], b.op("Sigmoid", node.inputs[0]))]


@rule("Elu")
def elu(node: Node, dy, b: GraphBuilder):
    # Below zero y = alpha * (exp(x) - 1), so dy/dx = y + alpha.
    positive = b.op("Greater", node.inputs[0], b.scalar(0.0))
    below = b.op("Add", node.outputs[0], b.scalar(node.attr("alpha", 1.0)))
    return [b.op("Where", positive, dy[0], b.op("Mul", dy[0], below))]


@rule("PRelu")
def prelu(node: Node, dy, b: GraphBuilder):
    x, slope = node.inputs
    positive = b.op("Greater", x, b.scalar(0.0))
    gx = b.op("Where", positive, dy[0], b.op("Mul", dy[0], slope))
    gs = None
    if b.needs(slope):
        gs = b.unbroadcast(b.op("Where", positive, b.scalar(0.0), b.op("Mul", dy[0], x)), slope,
                           node.outputs[0])
    return [gx, gs]


@rule("HardSigmoid")
def hard_sigmoid(node: Node, dy, b: GraphBuilder):
    # y = clip(alpha * x + beta, 0, 1): slope alpha strictly inside, as torch's hardsigmoid.
    alpha, beta = node.attr("alpha", 0.2), node.attr("beta", 0.5)
    z = b.op("Add", b.op("Mul", node.inputs[0], b.scalar(alpha)), b.scalar(beta))
    inside = b.op("And", b.op("Greater", z, b.scalar(0.0)), b.op("Less", z, b.scalar(1.0)))
    return [_gate(b, b.op("Mul", dy[0], b.scalar(alpha)), inside)]


@rule("HardSwish")
def hard_swish(node: Node, dy, b: GraphBuilder):
    # y = x * relu6(x + 3) / 6: slope 0 below -3, 1 above 3, x / 3 + 1/2 between (torch's).
    x = node.inputs[0]
    middle = b.op("Add", b.op("Div", x, b.scalar(3.0)), b.scalar(0.5))
    slope = b.op("Where", b.op("Less", x, b.scalar(-3.0)), b.scalar(0.0),
                 b.op("Where", b.op("Greater", x, b.scalar(3.0)), b.scalar(1.0), middle))
    return [b.op("Mul", dy[0], slope)]


@rule("Erf")
def erf(node: Node, dy, b: GraphBuilder):
    x = node.inputs[0]
    density = b.op("Exp", b.op("Neg", b.op("Mul", x, x)))
    return [b.op("Mul", dy[0], b.op("Mul", density, b.scalar(2.0 / math.sqrt(math.pi))))]


@rule("Gelu")
def gelu(node: Node, dy, b: GraphBuilder):
    x = node.inputs[0]
    if node.attr("approximate", "none") == "tanh":
        # y = x/2 (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3)
        c, k = math.sqrt(2.0 / math.pi), 0.044715
        x2 = b.op("Mul", x, x)
        u = b.op("Mul", b.scalar(c), b.op("Mul", x, b.op("Add", b.scalar(1.0),
                                                         b.op("Mul", b.scalar(k), x2))))
        t = b.op("Tanh", u)
        du = b.op("Mul", b.scalar(c), b.op("Add", b.scalar(1.0), b.op("Mul", b.scalar(3 * k), x2)))
        half_x_dt = b.op("Mul", b.op("Mul", b.scalar(0.5), x),
                         b.op("Mul", b.op("Sub", b.scalar(1.0), b.op("Mul", t, t)), du))
        slope = b.op("Add", b.op("Mul", b.scalar(0.5), b.op("Add", b.scalar(1.0), t)), half_x_dt)
    else:
        # y = x Phi(x): slope Phi(x) + x phi(x)
        cdf = b.op("Mul", b.scalar(0.5), b.op("Add", b.scalar(1.0), b.op(
            "Erf", b.op("Mul", x, b.scalar(1.0 / math.sqrt(2.0))))))
        pdf = b.op("Mul", b.scalar(1.0 / math.sqrt(2.0 * math.pi)),
                   b.op("Exp", b.op("Mul", b.scalar(-0.5), b.op("Mul", x, x))))
        slope = b.op("Add", cdf, b.op("Mul", x, pdf))
    return [b.op("Mul", dy[0], slope)]
