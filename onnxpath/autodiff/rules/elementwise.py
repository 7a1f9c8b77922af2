"""Arithmetic with numpy broadcasting: every gradient is summed back to its operand's shape."""

from __future__ import annotations

from ..builder import GraphBuilder, Node
from . import rule


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
