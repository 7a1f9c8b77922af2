"""Reductions. The gradient is the upstream gradient broadcast back over the reduced axes."""

from __future__ import annotations

from onnxpath.autodiff.builder import GraphBuilder, Node
from onnxpath.autodiff.rules import rule


def reduced_axes(node: Node, b: GraphBuilder) -> list[int] | None:
    """The reduced axes, non-negative and sorted; None when the op reduces nothing.

    Axes are an attribute before opset 18 (13 for ReduceSum) and an input after."""
    rank = b.rank(node.inputs[0])
    axes = node.attr("axes")
    if node.input(1):
        axes = b.constant_value(node.inputs[1])
        if axes is None:
            raise ValueError("reduction axes computed at run time")
    if axes is None or len(axes) == 0:
        return None if node.attr("noop_with_empty_axes", 0) else list(range(rank))
    return sorted(int(a) % rank for a in axes)


def _spread(node: Node, g: str, axes: list[int], b: GraphBuilder) -> str:
    """Broadcast a gradient of the reduced tensor back to the input's shape."""
    if not node.attr("keepdims", 1):
        g = b.op("Unsqueeze", g, b.ints(axes))
    return b.op("Expand", g, b.shape_of(node.inputs[0]))


@rule("ReduceSum")
def reduce_sum(node: Node, dy, b: GraphBuilder):
    axes = reduced_axes(node, b)
    return [dy[0] if axes is None else _spread(node, dy[0], axes, b), None]


@rule("ReduceMean")
def reduce_mean(node: Node, dy, b: GraphBuilder):
    axes = reduced_axes(node, b)
    if axes is None:
        return [dy[0], None]
    shape = b.shape_of(node.inputs[0])
    count = b.op("Cast", b.op("ReduceProd", b.op("Gather", shape, b.ints(axes)), keepdims=0),
                 to=b.float_type)
    return [b.op("Div", _spread(node, dy[0], axes, b), count), None]


@rule("ReduceMax", "ReduceMin")
def reduce_extremum(node: Node, dy, b: GraphBuilder):
    # Split evenly between tied extrema, as torch's amax/amin: an all-zero post-ReLU map ties
    # everywhere, and a plain equality mask would multiply the gradient by the tie count.
    axes = reduced_axes(node, b)
    if axes is None:
        return [dy[0], None]
    x = node.inputs[0]
    y = node.outputs[0] if node.attr("keepdims", 1) else \
        b.op("Unsqueeze", node.outputs[0], b.ints(axes))
    hits = b.op("Cast", b.op("Equal", x, y), to=b.float_type)
    ties = b.reduce_sum(hits, axes, keepdims=bool(node.attr("keepdims", 1)))
    return [b.op("Mul", _spread(node, b.op("Div", dy[0], ties), axes, b), hits), None]
