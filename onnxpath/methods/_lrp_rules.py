"""The LRP rules as gradient-graph rules: each maps the relevance R at a layer's output z to the
relevance at its input x, written with the ONNX ops the gradient walk already emits.

Every rule is the "modified gradient" form of Bach et al. 2015 / Montavon et al. 2019:
    R_x = sum_k  x_k ⊙ W_k^T ( R / stab(z_k) )
for a few (input x_k, weights W_k) pairs, where z_k = W_k x_k (+ b_k) is a forward pass with
modified parameters. W^T s is the layer's own gradient rule applied to s, with the weights
swapped for W_k. Definitions and conventions follow Zennit 0.5.1 (`zennit.rules`), which the
tests match: stab(z) = z + eps·sign(z), sign(0) = +1; every parameter modifier applies to the
bias too (z+ keeps b+ in z), the bias is dropped from the terms fed by negative inputs, and
`zero_bias` (Zennit's zero_params=["bias"]) drops it everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from onnx import helper, numpy_helper

from onnxpath.autodiff import RULES, GraphBuilder, Node
from onnxpath.methods._lrp_plan import Layer

STABILIZER = 1e-6  # Zennit's: the denominators of every rule but epsilon's own epsilon


@dataclass(frozen=True)
class Settings:
    epsilon: float = 1e-6
    gamma: float = 0.25
    box: tuple[float, float] | None = None  # None: each example's own min and max
    zero_bias: bool = False
    wrt: str = ""  # the attributed input, whose range bounds the box rule by default

    def bias(self, layer: Layer, modify: Callable[[np.ndarray], np.ndarray] = lambda b: b):
        return None if self.zero_bias or layer.bias is None else modify(layer.bias)


def constant(b: GraphBuilder, array: np.ndarray) -> str:
    """A constant the standard rules can ask the shape of."""
    name = b.const(array)
    b.value_info[name] = (b.float_type, tuple(array.shape))
    return name


def forward(b: GraphBuilder, layer: Layer, x: str, weight: np.ndarray,
            bias: np.ndarray | None) -> str:
    """z = layer(x; weight) + bias, in the layer's own op and attributes."""
    node, w = layer.node, constant(b, weight)
    if node.op_type == "MatMul":
        z = b.op("MatMul", x, w)
        return z if bias is None else b.op("Add", z, constant(b, bias))
    c = None if bias is None else constant(b, bias)
    return b.op(node.op_type, x, w, c, **node.attrs)


def backward(b: GraphBuilder, layer: Layer, s: str, weight: np.ndarray) -> str:
    """W^T s: the layer's gradient rule with its weights swapped for `weight`."""
    swapped = replace(layer.node, inputs=[layer.node.inputs[0], constant(b, weight)])
    return RULES[layer.node.op_type](swapped, [s], b)[0]


def stabilised(b: GraphBuilder, z: str, eps: float) -> str:
    return b.op("Where", b.op("GreaterOrEqual", z, b.scalar(0.0)),
                b.op("Add", z, b.scalar(eps)), b.op("Sub", z, b.scalar(eps)))


def ratio(b: GraphBuilder, r: str, z: str, eps: float = STABILIZER) -> str:
    return b.op("Div", r, stabilised(b, z, eps))


def signed_parts(b: GraphBuilder, x: str) -> tuple[str, str]:
    return b.op("Relu", x), b.op("Min", x, b.scalar(0.0))


def ones_like_input(b: GraphBuilder, layer: Layer, x: str) -> str:
    """Ones over the layer's input, zero where an explicit Pad added padding (a Conv's own pads
    see zeros there too, which is what the flat, w² and box rules assume)."""
    one = np.ones(1, dtype=helper.tensor_dtype_to_np_dtype(b.float_type))
    source = layer.pad.inputs[0] if layer.pad is not None else x
    ones = b.op("ConstantOfShape", b.shape_of(source), value=numpy_helper.from_array(one))
    if layer.pad is None:
        return ones
    return b.op("Pad", ones, *layer.pad.inputs[1:], mode="constant")


# --- the rules: (b, layer, x, R, settings) -> (relevance at x, the relevance the bias keeps,
# shaped like z, or None) ---------------------------------------------------------------------

def bias_share(b: GraphBuilder, layer: Layer, s: str, bias: np.ndarray | None) -> str | None:
    """bias ⊙ s over the layer's output: the relevance a bias term keeps."""
    if bias is None:
        return None
    rank = b.rank(layer.output)
    shape = (-1,) + (1,) * (rank - 2) if layer.kind == "conv" else (-1,)
    return b.op("Mul", s, constant(b, bias.reshape(shape)))


def _total(b: GraphBuilder, *terms: str | None) -> str | None:
    present = [t for t in terms if t is not None]
    if not present:
        return None
    return present[0] if len(present) == 1 else b.op("Sum", *present)


def _scaled(b: GraphBuilder, t: str | None, factor: float) -> str | None:
    return t if t is None or factor == 1 else b.op("Mul", t, b.scalar(factor))


def epsilon_rule(b: GraphBuilder, layer: Layer, x: str, r: str, p: Settings):
    """LRP-ε (Bach et al. 2015): R_x = x ⊙ W^T s with s = R / stab_ε(z), z = W x + b. The
    bias keeps b ⊙ s and ε the rest; zero_bias conserves up to ε."""
    dropped = p.zero_bias and layer.bias is not None
    z = forward(b, layer, x, layer.weight, None) if dropped else layer.output
    s = ratio(b, r, z, p.epsilon)
    return (b.op("Mul", x, backward(b, layer, s, layer.weight)),
            bias_share(b, layer, s, p.bias(layer)))


def _signed_share(b, layer, xp, xn, r, w_xp, w_xn, bias):
    """Relevance through the contributions of one sign: z = w_xp x+ + w_xn x- + bias."""
    z = b.op("Add", forward(b, layer, xp, w_xp, bias), forward(b, layer, xn, w_xn, None))
    s = ratio(b, r, z)
    return (b.op("Add", b.op("Mul", xp, backward(b, layer, s, w_xp)),
                 b.op("Mul", xn, backward(b, layer, s, w_xn))),
            bias_share(b, layer, s, bias))


def alpha_beta_rule(alpha: float, beta: float):
    """LRP-αβ (Bach et al. 2015), α - β = 1: the positive contributions (W+ x+ and W- x-)
    distribute α R, the negative ones (W- x+ and W+ x-) take β R away. α=1, β=0 is z+
    (Montavon et al. 2017)."""

    def rule(b: GraphBuilder, layer: Layer, x: str, r: str, p: Settings):
        xp, xn = signed_parts(b, x)
        w = layer.weight
        wp, wn = np.clip(w, 0, None), np.clip(w, None, 0)
        positive, kept = _signed_share(b, layer, xp, xn, r, wp, wn,
                                       p.bias(layer, lambda v: np.clip(v, 0, None)))
        if beta == 0:
            return _scaled(b, positive, alpha), _scaled(b, kept, alpha)
        negative, lost = _signed_share(b, layer, xp, xn, r, wn, wp,
                                       p.bias(layer, lambda v: np.clip(v, None, 0)))
        return (b.op("Sub", _scaled(b, positive, alpha), _scaled(b, negative, beta)),
                _total(b, _scaled(b, kept, alpha), _scaled(b, lost, -beta)))

    return rule


def gamma_rule(b: GraphBuilder, layer: Layer, x: str, r: str, p: Settings):
    """Generalised LRP-γ (Montavon et al. 2019; Andéol et al. 2021, as Zennit): a neuron with
    z > 0 spreads R over W + γW+ on x+ and W + γW- on x-; one with z < 0 the other way round."""
    w, g = layer.weight, p.gamma
    wa, wb = w + g * np.clip(w, 0, None), w + g * np.clip(w, None, 0)
    ba = p.bias(layer, lambda v: v + g * np.clip(v, 0, None))
    bb = p.bias(layer, lambda v: v + g * np.clip(v, None, 0))
    xp, xn = signed_parts(b, x)
    z = layer.output  # the sign of the unmodified output (with its bias) picks the case

    def share(sign: str, w_xp, w_xn, bias):
        denom = b.op("Add", forward(b, layer, xp, w_xp, bias), forward(b, layer, xn, w_xn, None))
        mask = b.op("Cast", b.op(sign, z, b.scalar(0.0)), to=b.float_type)
        s = ratio(b, b.op("Mul", r, mask), denom)
        return (backward(b, layer, s, w_xp), backward(b, layer, s, w_xn),
                bias_share(b, layer, s, bias))

    up_p, up_n, up_kept = share("Greater", wa, wb, ba)
    down_p, down_n, down_kept = share("Less", wb, wa, bb)
    return (b.op("Add", b.op("Mul", xp, b.op("Add", up_p, down_p)),
                 b.op("Mul", xn, b.op("Add", up_n, down_n))), _total(b, up_kept, down_kept))


def _uniform(weight_of: Callable[[np.ndarray], np.ndarray], keeps_bias: bool):
    def rule(b: GraphBuilder, layer: Layer, x: str, r: str, p: Settings):
        w = weight_of(layer.weight)
        bias = p.bias(layer, np.square) if keeps_bias else None
        z = forward(b, layer, ones_like_input(b, layer, x), w, bias)
        s = ratio(b, r, z)
        return backward(b, layer, s, w), bias_share(b, layer, s, bias)

    return rule


# Flat (Lapuschkin et al. 2019): R spread evenly over each output's receptive field (weights
# and inputs all ones, no bias). w² (Montavon et al. 2017): spread in proportion to w², no
# input; Zennit squares the bias too and keeps it in z.
flat_rule = _uniform(np.ones_like, keeps_bias=False)
wsquare_rule = _uniform(np.square, keeps_bias=True)


def _bound(b: GraphBuilder, x: str, mask: str, value: float | None, reduce: str,
           p: Settings) -> str:
    if value is not None:
        return b.op("Mul", mask, b.scalar(float(value)))
    rank = b.rank(p.wrt)
    per_example = b.reduce(reduce, p.wrt, list(range(1, rank)), keepdims=False)
    shaped = b.op("Unsqueeze", per_example, b.ints(range(1, b.rank(x))))
    return b.op("Mul", mask, shaped)


def box_rule(b: GraphBuilder, layer: Layer, x: str, r: str, p: Settings):
    """z^B (Montavon et al. 2017) for inputs bounded by l <= x <= h:
    z = W x - W+ l - W- h, R_x = x ⊙ W^T s - l ⊙ W+^T s - h ⊙ W-^T s with s = R / z. The bias
    terms (b - b+ - b-) cancel: no bias keeps relevance. l and h default to each example's own
    min and max."""
    w = layer.weight
    wp, wn = np.clip(w, 0, None), np.clip(w, None, 0)
    mask = ones_like_input(b, layer, x)
    low = _bound(b, x, mask, None if p.box is None else p.box[0], "ReduceMin", p)
    high = _bound(b, x, mask, None if p.box is None else p.box[1], "ReduceMax", p)
    z = b.op("Sub", b.op("Sub", forward(b, layer, x, w, None), forward(b, layer, low, wp, None)),
             forward(b, layer, high, wn, None))
    s = ratio(b, r, z)
    return b.op("Sub", b.op("Sub", b.op("Mul", x, backward(b, layer, s, w)),
                            b.op("Mul", low, backward(b, layer, s, wp))),
                b.op("Mul", high, backward(b, layer, s, wn))), None


LAYER_RULES = {
    "epsilon": epsilon_rule,
    "zplus": alpha_beta_rule(1.0, 0.0),
    "alpha1beta0": alpha_beta_rule(1.0, 0.0),
    "alpha2beta1": alpha_beta_rule(2.0, 1.0),
    "gamma": gamma_rule,
    "flat": flat_rule,
    "wsquare": wsquare_rule,
    "box": box_rule,
}


# --- the rules of the other nodes: (node, dy, b) -> one relevance per input ----------------

def passed_on(node: Node, dy, b: GraphBuilder) -> list[str | None]:
    """Zennit's Pass: the relevance of each output element goes to the one input element that
    made it (summed over broadcast axes)."""
    out = node.outputs[0]
    return [b.unbroadcast(dy[0], i, out) if b.needs(i) else None for i in node.inputs]


def proportional(node: Node, dy, b: GraphBuilder) -> list[str | None]:
    """Zennit's Norm: each input keeps the share of the output it contributed,
    R_i = x_i ⊙ (dz/dx_i)^T (R / stab(z)); for a sum, R_i = x_i R / z."""
    grads = RULES[node.op_type](node, [ratio(b, dy[0], node.outputs[0])], b)
    return [b.op("Mul", i, g) if g is not None else None
            for i, g in zip(node.inputs, grads, strict=False)]
