"""Pointwise maths (trigonometric and hyperbolic functions, the smooth activations that have no
ReLU-like gate), the norm-like reductions, cumulative sums and products, and Det.

Each derivative is the textbook one, written next to its op as in PyTorch's derivatives.yaml.
"""

from __future__ import annotations

import numpy as np

from onnxpath.autodiff.builder import GraphBuilder, Node
from onnxpath.autodiff.rules import rule
from onnxpath.autodiff.rules.reduce import reduced_axes


def _times(b: GraphBuilder, dy: str, slope: str) -> list[str]:
    return [b.op("Mul", dy, slope)]


def _square(b: GraphBuilder, x: str) -> str:
    return b.op("Mul", x, x)


# --- trigonometric and hyperbolic -------------------------------------------------------------

@rule("Sin")
def sin(node: Node, dy, b: GraphBuilder):
    return _times(b, dy[0], b.op("Cos", node.inputs[0]))


@rule("Cos")
def cos(node: Node, dy, b: GraphBuilder):
    return _times(b, dy[0], b.op("Neg", b.op("Sin", node.inputs[0])))


@rule("Tan")
def tan(node: Node, dy, b: GraphBuilder):  # 1 + tan^2
    return _times(b, dy[0], b.op("Add", b.scalar(1.0), _square(b, node.outputs[0])))


@rule("Asin", "Acos")
def arcsin(node: Node, dy, b: GraphBuilder):  # +-1 / sqrt(1 - x^2)
    root = b.op("Sqrt", b.op("Sub", b.scalar(1.0), _square(b, node.inputs[0])))
    slope = b.op("Reciprocal", root)
    return _times(b, dy[0], slope if node.op_type == "Asin" else b.op("Neg", slope))


@rule("Atan")
def arctan(node: Node, dy, b: GraphBuilder):  # 1 / (1 + x^2)
    return _times(b, dy[0], b.op("Reciprocal", b.op("Add", b.scalar(1.0),
                                                    _square(b, node.inputs[0]))))


@rule("Sinh")
def sinh(node: Node, dy, b: GraphBuilder):
    return _times(b, dy[0], b.op("Cosh", node.inputs[0]))


@rule("Cosh")
def cosh(node: Node, dy, b: GraphBuilder):
    return _times(b, dy[0], b.op("Sinh", node.inputs[0]))


@rule("Asinh", "Acosh")
def arcsinh(node: Node, dy, b: GraphBuilder):  # 1 / sqrt(x^2 +- 1)
    one = b.scalar(1.0 if node.op_type == "Asinh" else -1.0)
    root = b.op("Sqrt", b.op("Add", _square(b, node.inputs[0]), one))
    return _times(b, dy[0], b.op("Reciprocal", root))


@rule("Atanh")
def arctanh(node: Node, dy, b: GraphBuilder):  # 1 / (1 - x^2)
    return _times(b, dy[0], b.op("Reciprocal", b.op("Sub", b.scalar(1.0),
                                                    _square(b, node.inputs[0]))))


# --- activations ----------------------------------------------------------------------------

def _positive(b: GraphBuilder, x: str) -> str:
    return b.op("Greater", x, b.scalar(0.0))


@rule("Selu")
def selu(node: Node, dy, b: GraphBuilder):
    # y = gamma x above 0, gamma alpha (e^x - 1) below: slope gamma, or y + gamma alpha.
    alpha = node.attr("alpha", 1.67326319217681884765625)
    gamma = node.attr("gamma", 1.05070102214813232421875)
    below = b.op("Add", node.outputs[0], b.scalar(alpha * gamma))
    slope = b.op("Where", _positive(b, node.inputs[0]), b.scalar(gamma), below)
    return _times(b, dy[0], slope)


@rule("Celu")
def celu(node: Node, dy, b: GraphBuilder):
    # y = max(0, x) + min(0, alpha (e^(x/alpha) - 1)): slope 1 above 0, e^(x/alpha) below.
    x, alpha = node.inputs[0], node.attr("alpha", 1.0)
    below = b.op("Exp", b.op("Div", x, b.scalar(alpha)))
    return _times(b, dy[0], b.op("Where", _positive(b, x), b.scalar(1.0), below))


@rule("Mish")
def mish(node: Node, dy, b: GraphBuilder):
    # y = x tanh(softplus(x)): slope t + x (1 - t^2) sigmoid(x).
    x = node.inputs[0]
    t = b.op("Tanh", b.op("Softplus", x))
    rest = b.op("Mul", b.op("Mul", x, b.op("Sub", b.scalar(1.0), _square(b, t))),
                b.op("Sigmoid", x))
    return _times(b, dy[0], b.op("Add", t, rest))


@rule("Softsign")
def softsign(node: Node, dy, b: GraphBuilder):  # y = x / (1 + |x|): slope 1 / (1 + |x|)^2
    denominator = b.op("Add", b.scalar(1.0), b.op("Abs", node.inputs[0]))
    return _times(b, dy[0], b.op("Reciprocal", _square(b, denominator)))


@rule("Shrink")
def shrink(node: Node, dy, b: GraphBuilder):
    # Slope 1 where |x| > lambd (shifted by bias there), 0 in the dead zone.
    lambd = node.attr("lambd", 0.5)
    outside = b.op("Greater", b.op("Abs", node.inputs[0]), b.scalar(lambd))
    return _times(b, dy[0], b.op("Cast", outside, to=b.float_type))


@rule("ThresholdedRelu")
def thresholded_relu(node: Node, dy, b: GraphBuilder):
    above = b.op("Greater", node.inputs[0], b.scalar(node.attr("alpha", 1.0)))
    return _times(b, dy[0], b.op("Cast", above, to=b.float_type))


def _swish_and_slope(b: GraphBuilder, x: str, alpha: float) -> tuple[str, str]:
    """x sigmoid(alpha x), and its slope s + alpha x s (1 - s)."""
    s = b.op("Sigmoid", b.op("Mul", x, b.scalar(alpha)))
    value = b.op("Mul", x, s)
    slope = b.op("Add", s, b.op("Mul", b.op("Mul", value, b.scalar(alpha)),
                                b.op("Sub", b.scalar(1.0), s)))
    return value, slope


@rule("Swish")
def swish(node: Node, dy, b: GraphBuilder):
    return _times(b, dy[0], _swish_and_slope(b, node.inputs[0], node.attr("alpha", 1.0))[1])


@rule("SwiGLU")
def swiglu(node: Node, dy, b: GraphBuilder):
    # y = swish(A) * B, same shapes (no broadcasting).
    a, gate = node.inputs[0], node.inputs[1]
    value, slope = _swish_and_slope(b, a, node.attr("alpha", 1.0))
    ga = b.op("Mul", b.op("Mul", dy[0], gate), slope) if b.needs(a) else None
    gb = b.op("Mul", dy[0], value) if b.needs(gate) else None
    return [ga, gb]


@rule("Hardmax")
def hardmax(node: Node, dy, b: GraphBuilder):
    return [None]  # piecewise constant: a one-hot of the argmax


@rule("Mod")
def mod(node: Node, dy, b: GraphBuilder):
    # y = a - q b with q = trunc(a / b) (fmod) or floor(a / b): slopes 1 and -q.
    a, divisor = node.inputs
    ga = b.unbroadcast(dy[0], a, node.outputs[0]) if b.needs(a) else None
    gb = None
    if b.needs(divisor):
        ratio = b.op("Div", a, divisor)
        q = b.op("Floor", ratio) if not node.attr("fmod", 0) else \
            b.op("Mul", b.op("Sign", ratio), b.op("Floor", b.op("Abs", ratio)))
        gb = b.unbroadcast(b.op("Neg", b.op("Mul", dy[0], q)), divisor, node.outputs[0])
    return [ga, gb]


@rule("CastLike")
def cast_like(node: Node, dy, b: GraphBuilder):
    return [b.op("Cast", dy[0], to=b.value_info.get(node.inputs[0], (b.float_type,))[0]), None]


# --- reductions that are norms, log-sums and products -----------------------------------------

def _reduced(node: Node, dy, b: GraphBuilder):
    """(axes, gradient spread back over the input's shape, output with the reduced dims kept);
    axes is None when the op reduces nothing (noop_with_empty_axes)."""
    axes = reduced_axes(node, b)
    if axes is None:
        return None, dy[0], node.outputs[0]
    g, y = dy[0], node.outputs[0]
    if not node.attr("keepdims", 1):
        g, y = b.op("Unsqueeze", g, b.ints(axes)), b.op("Unsqueeze", y, b.ints(axes))
    return axes, b.op("Expand", g, b.shape_of(node.inputs[0])), y


@rule("ReduceL1")
def reduce_l1(node: Node, dy, b: GraphBuilder):
    axes, g, _ = _reduced(node, dy, b)
    return [g if axes is None else b.op("Mul", g, b.op("Sign", node.inputs[0])), None]


@rule("ReduceL2")
def reduce_l2(node: Node, dy, b: GraphBuilder):  # x / ||x||
    axes, g, y = _reduced(node, dy, b)
    return [g if axes is None else b.op("Mul", g, b.op("Div", node.inputs[0], y)), None]


@rule("ReduceSumSquare")
def reduce_sum_square(node: Node, dy, b: GraphBuilder):
    axes, g, _ = _reduced(node, dy, b)
    return [g if axes is None else b.op("Mul", g, b.op("Mul", node.inputs[0], b.scalar(2.0))),
            None]


@rule("ReduceLogSum")
def reduce_log_sum(node: Node, dy, b: GraphBuilder):  # 1 / sum(x) = 1 / exp(y)
    axes, g, y = _reduced(node, dy, b)
    return [g if axes is None else b.op("Div", g, b.op("Exp", y)), None]


@rule("ReduceLogSumExp")
def reduce_log_sum_exp(node: Node, dy, b: GraphBuilder):  # softmax: exp(x - y)
    axes, g, y = _reduced(node, dy, b)
    return [g if axes is None else b.op("Mul", g, b.op("Exp", b.op("Sub", node.inputs[0], y))),
            None]


@rule("ReduceProd")
def reduce_prod(node: Node, dy, b: GraphBuilder):
    # d prod / d x_i is the product of the others. y / x_i fails at zeros (ReLU outputs have
    # many), so with P the product of the non-zero elements and Z the number of zeros: P / x_i
    # when Z = 0, P at the one zero when Z = 1, and 0 everywhere when Z > 1.
    axes, g, _ = _reduced(node, dy, b)
    if axes is None:
        return [g, None]
    x = node.inputs[0]
    zero = b.op("Equal", x, b.scalar(0.0))
    safe = b.op("Where", zero, b.scalar(1.0), x)
    nonzero_product = b.reduce("ReduceProd", safe, axes, keepdims=True)
    zeros = b.reduce_sum(b.op("Cast", zero, to=b.float_type), axes, keepdims=True)
    none_zero = b.op("Cast", b.op("Equal", zeros, b.scalar(0.0)), to=b.float_type)
    one_zero = b.op("Cast", b.op("Equal", zeros, b.scalar(1.0)), to=b.float_type)
    others = b.op("Where", zero, b.op("Mul", nonzero_product, one_zero),
                  b.op("Div", b.op("Mul", nonzero_product, none_zero), safe))
    return [b.op("Mul", g, others), None]


# --- cumulative ops -----------------------------------------------------------------------

@rule("CumSum")
def cumsum(node: Node, dy, b: GraphBuilder):
    # Each input adds to the outputs after it (before it, reversed): the adjoint sums the other
    # way, with the same exclusivity.
    reverse = 0 if node.attr("reverse", 0) else 1
    return [b.op("CumSum", dy[0], node.inputs[1], exclusive=node.attr("exclusive", 0),
                 reverse=reverse), None]


@rule("CumProd")
def cumprod(node: Node, dy, b: GraphBuilder):
    # d y_j / d x_i = y_j / x_i for every j that x_i multiplies into (x assumed non-zero).
    reverse = 0 if node.attr("reverse", 0) else 1
    x, y = node.inputs[0], node.outputs[0]
    summed = b.op("CumSum", b.op("Mul", dy[0], y), node.inputs[1],
                  exclusive=node.attr("exclusive", 0), reverse=reverse)
    return [b.op("Div", summed, x), None]


# --- linear algebra --------------------------------------------------------------------------

@rule("Det")
def det(node: Node, dy, b: GraphBuilder):
    # d det(X) / d X_ij is the cofactor C_ij = (-1)^(i+j) det(X without row i and column j).
    # The minors are gathered at once into [..., n, n, n-1, n-1] and batched through Det.
    x = node.inputs[0]
    n = b.static_shape(x)[-1]
    rank = b.rank(x)
    if n == 1:
        return [b.op("Unsqueeze", dy[0], b.ints([rank - 2, rank - 1]))]
    others = b.ints([[k for k in range(n) if k != i] for i in range(n)])
    rows = b.op("Gather", x, others, axis=rank - 2)  # [..., i, n-1, n]
    minors = b.op("Gather", rows, others, axis=rank)  # [..., i, n-1, j, n-1]
    lead = list(range(rank - 2))
    minors = b.op("Transpose", minors, perm=[*lead, rank - 2, rank, rank - 1, rank + 1])
    signs = b.const(np.fromfunction(lambda i, j: (-1.0) ** (i + j), (n, n)))
    cofactors = b.op("Mul", b.op("Det", minors), signs)
    return [b.op("Mul", b.op("Unsqueeze", dy[0], b.ints([rank - 2, rank - 1])), cofactors)]
