"""Normalisation layers in inference mode: fixed statistics make them per-channel affine maps."""

from __future__ import annotations

from onnxpath.autodiff.builder import GraphBuilder, Node
from onnxpath.autodiff.rules import rule


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

def _standardised_gradient(b: GraphBuilder, x: str, g: str, axes: list[int], eps: float) -> str:
    """Input gradient of (x - mean) / sqrt(var + eps) over `axes`, given `g` at its output:
    r * (g - mean(g) - xhat * mean(g * xhat)), statistics recomputed from x."""
    centred = b.op("Sub", x, b.reduce("ReduceMean", x, axes))
    var = b.reduce("ReduceMean", b.op("Mul", centred, centred), axes)
    r = b.op("Reciprocal", b.op("Sqrt", b.op("Add", var, b.scalar(eps))))
    xhat = b.op("Mul", centred, r)
    mean_g = b.reduce("ReduceMean", g, axes)
    mean_gx = b.reduce("ReduceMean", b.op("Mul", g, xhat), axes)
    return b.op("Mul", r, b.op("Sub", b.op("Sub", g, mean_g), b.op("Mul", xhat, mean_gx)))

@rule("LayerNormalization")
def layer_norm(node: Node, dy, b: GraphBuilder):
    if dy[1:] and any(g is not None for g in dy[1:]):
        raise NotImplementedError("gradients through LayerNormalization's Mean/InvStdDev outputs")
    x, scale = node.inputs[0], node.inputs[1]
    rank = b.rank(x)
    axes = list(range(node.attr("axis", -1) % rank, rank))
    g = b.op("Mul", dy[0], scale)
    return [_standardised_gradient(b, x, g, axes, node.attr("epsilon", 1e-5)), None, None]

@rule("InstanceNormalization")
def instance_norm(node: Node, dy, b: GraphBuilder):
    x, scale = node.inputs[0], node.inputs[1]
    rank = b.rank(x)
    per_channel = b.op("Unsqueeze", scale, b.ints(range(1, rank - 1)))
    g = b.op("Mul", dy[0], per_channel)
    axes = list(range(2, rank))
    return [_standardised_gradient(b, x, g, axes, node.attr("epsilon", 1e-5)), None, None]

def _channel_window_sum(b: GraphBuilder, t: str, rank: int, size: int, before: int,
                        after: int) -> str:
    """Sum over channels c-before..c+after (clipped at the edges), as a Conv over a unit axis."""
    kernel = b.ones((1, 1, size) + (1,) * (rank - 2))
    pads = [before] + [0] * (rank - 2) + [after] + [0] * (rank - 2)
    summed = b.op("Conv", b.op("Unsqueeze", t, b.ints([1])), kernel, pads=pads)
    return b.op("Squeeze", summed, b.ints([1]))

@rule("LRN")
def lrn(node: Node, dy, b: GraphBuilder):
    # y = x * s^-beta, s = bias + alpha/size * sum of x^2 over a channel window. The window
    # reaches floor((size-1)/2) channels back and ceil((size-1)/2) forward; its adjoint is the
    # mirrored window.
    x = node.inputs[0]
    rank, size = b.rank(x), node.attr("size")
    alpha, beta = node.attr("alpha", 1e-4), node.attr("beta", 0.75)
    back, forward = (size - 1) // 2, size // 2
    channels = b.static_shape(x, 1)[0]
    # A window reaching past every channel sums the same channels as one that just spans them:
    # bound the summing kernel (an attribute) by the channel count.
    back, forward = min(back, channels - 1), min(forward, channels - 1)
    window = back + forward + 1
    squares = _channel_window_sum(b, b.op("Mul", x, x), rank, window, back, forward)
    s = b.op("Add", b.scalar(node.attr("bias", 1.0)), b.op("Mul", squares, b.scalar(alpha / size)))
    direct = b.op("Mul", dy[0], b.op("Pow", s, b.scalar(-beta)))
    through_s = b.op("Mul", b.op("Mul", dy[0], x), b.op("Pow", s, b.scalar(-beta - 1.0)))
    spread = _channel_window_sum(b, through_s, rank, window, forward, back)
    coupling = b.op("Mul", b.op("Mul", x, spread), b.scalar(2.0 * alpha * beta / size))
    return [b.op("Sub", direct, coupling)]
