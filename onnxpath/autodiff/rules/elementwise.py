"""Arithmetic with numpy broadcasting: every gradient is summed back to its operand's shape."""

from __future__ import annotations

from onnxpath.autodiff.builder import GraphBuilder, Node
from onnxpath.autodiff.rules import rule


def _back(b: GraphBuilder, node: Node, i: int, grad: str | None) -> str | None:
    name = node.input(i)
    if grad is None or not b.needs(name):
        return None
    return b.unbroadcast(grad, name, node.outputs[0])


@rule("Add")
def add(node: Node, dy, b: GraphBuilder):
    return [_back(b, node, 0, dy[0]), _back(b, node, 1, dy[0])]


@rule("Sub")
def sub(node: Node, dy, b: GraphBuilder):
    neg = b.op("Neg", dy[0]) if b.needs(node.inputs[1]) else None
    return [_back(b, node, 0, dy[0]), _back(b, node, 1, neg)]


@rule("Mul")
def mul(node: Node, dy, b: GraphBuilder):
    x, y = node.inputs
    gx = b.op("Mul", dy[0], y) if b.needs(x) else None
    gy = b.op("Mul", dy[0], x) if b.needs(y) else None
    return [_back(b, node, 0, gx), _back(b, node, 1, gy)]


@rule("Div")
def div(node: Node, dy, b: GraphBuilder):
    x, y = node.inputs
    gx = b.op("Div", dy[0], y) if b.needs(x) else None
    # d(x/y)/dy = -(x/y)/y, reusing the forward output
    gy = b.op("Neg", b.op("Div", b.op("Mul", dy[0], node.outputs[0]), y)) if b.needs(y) else None
    return [_back(b, node, 0, gx), _back(b, node, 1, gy)]


@rule("Sum")
def sum_(node: Node, dy, b: GraphBuilder):
    return [_back(b, node, i, dy[0]) for i in range(len(node.inputs))]


@rule("Neg")
def neg(node: Node, dy, b: GraphBuilder):
    return [b.op("Neg", dy[0])]


@rule("Mean")
def mean(node: Node, dy, b: GraphBuilder):
    share = b.op("Div", dy[0], b.scalar(float(len(node.inputs))))
    return [_back(b, node, i, share) for i in range(len(node.inputs))]


@rule("Max", "Min")
def extremum(node: Node, dy, b: GraphBuilder):
    # The gradient goes to the inputs equal to the result, split evenly between ties (as torch's
    # maximum/minimum), so that it is never counted twice.
    y = node.outputs[0]
    if len(node.inputs) == 1:
        return [dy[0]]
    hits = [b.op("Cast", b.op("Equal", x, y), to=b.float_type) for x in node.inputs]
    share = b.op("Div", dy[0], b.op("Sum", *hits))
    return [_back(b, node, i, b.op("Mul", share, hits[i])) if b.needs(node.inputs[i]) else None
            for i in range(len(node.inputs))]


@rule("Where")
def where(node: Node, dy, b: GraphBuilder):
    condition, zero = node.inputs[0], b.scalar(0.0)
    gx = b.op("Where", condition, dy[0], zero) if b.needs(node.inputs[1]) else None
    gy = b.op("Where", condition, zero, dy[0]) if b.needs(node.inputs[2]) else None
    return [None, _back(b, node, 1, gx), _back(b, node, 2, gy)]


@rule("Pow")
def pow_(node: Node, dy, b: GraphBuilder):
    x, p = node.inputs
    exponent = b.op("Cast", p, to=b.float_type)  # integer exponents are allowed
    gx = gp = None
    if b.needs(x):  # p * x^(p-1)
        slope = b.op("Mul", exponent, b.op("Pow", x, b.op("Sub", exponent, b.scalar(1.0))))
        gx = b.op("Mul", dy[0], slope)
    if b.needs(p):  # x^p * log(x)
        gp = b.op("Mul", dy[0], b.op("Mul", node.outputs[0], b.op("Log", x)))
    return [_back(b, node, 0, gx), _back(b, node, 1, gp)]


@rule("Sqrt")
def sqrt(node: Node, dy, b: GraphBuilder):
    return [b.op("Div", dy[0], b.op("Mul", node.outputs[0], b.scalar(2.0)))]


@rule("Exp")
def exp(node: Node, dy, b: GraphBuilder):
    return [b.op("Mul", dy[0], node.outputs[0])]


@rule("Log")
def log(node: Node, dy, b: GraphBuilder):
    return [b.op("Div", dy[0], node.inputs[0])]


@rule("Reciprocal")
def reciprocal(node: Node, dy, b: GraphBuilder):
    y = node.outputs[0]
    return [b.op("Neg", b.op("Mul", dy[0], b.op("Mul", y, y)))]


@rule("Abs")
def abs_(node: Node, dy, b: GraphBuilder):
    return [b.op("Mul", dy[0], b.op("Sign", node.inputs[0]))]


@rule("Cast")
def cast(node: Node, dy, b: GraphBuilder):
    # Only float-to-float casts carry adjoints (others give no float output or take no float
    # input); the gradient goes back in the input's own precision.
    return [b.op("Cast", dy[0], to=b.value_info.get(node.inputs[0], (b.float_type,))[0])]


@rule("Floor", "Ceil", "Round", "Sign")
def piecewise_constant(node: Node, dy, b: GraphBuilder):
    return [None]
