"""Lp norms: LpNormalization, LpPool, GlobalLpPool and RMSNormalization, each written as the
ops that define it (a sum of |x|^p, its p-th root, a division) and differentiated through that
definition."""

from __future__ import annotations

from onnxpath.autodiff.builder import GraphBuilder, Node
from onnxpath.autodiff.rules import rule
from onnxpath.autodiff.rules.functions import Body, differentiate_body


def _root_of_power_sum(body: Body, b: GraphBuilder, x: str, p: int, total) -> str:
    """(total(|x|^p))^(1/p), where `total` sums over a window or axes."""
    powered = body.op("Pow", body.op("Abs", x), b.scalar(float(p)))
    return body.op("Pow", total(powered), b.scalar(1.0 / p))


@rule("LpNormalization")
def lp_normalization(node: Node, dy, b: GraphBuilder):
    # y = x / ||x||_p along `axis`.
    x, p = node.inputs[0], node.attr("p", 2)
    axis = node.attr("axis", -1) % b.rank(x)
    body = Body(b)
    norm = _root_of_power_sum(body, b, x, p,
                              lambda t: body.op("ReduceSum", t, b.ints([axis]), keepdims=1))
    y = body.op("Div", x, norm)
    return differentiate_body(node, dy, b, body.nodes, {node.outputs[0]: y})


@rule("GlobalLpPool")
def global_lp_pool(node: Node, dy, b: GraphBuilder):
    x, p = node.inputs[0], node.attr("p", 2)
    spatial = list(range(2, b.rank(x)))
    body = Body(b)
    y = _root_of_power_sum(body, b, x, p,
                           lambda t: body.op("ReduceSum", t, b.ints(spatial), keepdims=1))
    return differentiate_body(node, dy, b, body.nodes, {node.outputs[0]: y})


@rule("LpPool")
def lp_pool(node: Node, dy, b: GraphBuilder):
    # The window sum of |x|^p is the window average with the padding counted, times the window
    # size; AveragePool has a rule, with the same geometry attributes.
    x, p = node.inputs[0], node.attr("p", 2)
    kernel = node.attr("kernel_shape")
    size = 1
    for k in kernel:
        size *= k
    body = Body(b)
    geometry = {k: node.attr(k) for k in ("kernel_shape", "strides", "pads", "auto_pad",
                                          "dilations", "ceil_mode")}

    def window_sum(t: str) -> str:
        average = body.op("AveragePool", t, count_include_pad=1, **geometry)
        return body.op("Mul", average, b.scalar(float(size)))

    y = _root_of_power_sum(body, b, x, p, window_sum)
    return differentiate_body(node, dy, b, body.nodes, {node.outputs[0]: y})


@rule("RMSNormalization")
def rms_normalization(node: Node, dy, b: GraphBuilder):
    # y = x / sqrt(mean(x^2 over the axes from `axis` on) + epsilon) * scale. (onnx's own body
    # computes the axes at run time with Range, which shape inference cannot follow.)
    x, scale = node.inputs[0], node.inputs[1]
    rank = b.rank(x)
    axes = list(range(node.attr("axis", -1) % rank, rank))
    body = Body(b)
    mean_square = body.op("ReduceMean", body.op("Mul", x, x), b.ints(axes), keepdims=1)
    rms = body.op("Sqrt", body.op("Add", mean_square, b.scalar(node.attr("epsilon", 1e-5))))
    y = body.op("Mul", body.op("Div", x, rms), scale)
    return differentiate_body(node, dy, b, body.nodes, {node.outputs[0]: y})
