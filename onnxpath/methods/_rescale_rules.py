"""DeepLIFT's rules, one function per op family, in the rule table's signature (Shrikumar et
al. 2017, "Learning Important Features Through Propagating Activation Differences"; Lundberg &
Lee 2017 for the Shapley split of an op of two varying operands, SHAP's DeepExplainer).

A rule returns each operand's *multiplier* times the incoming one: m = Δy/Δx, the change of
the op's output between the input's run and the reference's run over the change of its
operand, so that Δy = Σ m Δx holds op by op and the contributions of the whole network sum to
f(x) − f(x') ("summation-to-delta"). The reference run's copy of tensor t is
`onnxpath_reference/t` (see `_rescale.with_reference`). Where an operand's change is below
EPS, the op's own gradient stands in for its multiplier (Captum's convention).
"""

from __future__ import annotations

from dataclasses import replace

from onnxpath.autodiff import GraphBuilder, Node
from onnxpath.autodiff.rules import RULES

REFERENCE = "onnxpath_reference/"
EPS = 1e-10  # Captum's DeepLift eps: below it a unit's change counts as none

# Elementwise ops of one varying input: the rescale rule applies (their other inputs, a Clip's
# bounds or a PRelu's slope, must be fixed).
ELEMENTWISE = ("Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "Tanh", "Softplus", "Softsign",
               "Elu", "Selu", "Celu", "HardSigmoid", "HardSwish", "Mish", "Erf", "Gelu", "Exp",
               "Log", "Sqrt", "Reciprocal", "Abs", "Sin", "Cos", "ThresholdedRelu")
MAX_POOLS = ("MaxPool", "GlobalMaxPool")
PRODUCTS = ("Mul", "MatMul", "Gemm")
PAIRS = ("Div", "Max", "Min", "Pow")  # elementwise, of two operands


def reference(name: str) -> str:
    """The reference run's copy of tensor `name`."""
    return REFERENCE + name


def change(b: GraphBuilder, x: str, x_ref: str | None = None) -> tuple[str, str, str]:
    """(Δx, where |Δx| <= EPS, Δx with 1 there): the rules fall back to the gradient where the
    change is too small to divide by, and never divide by zero even in the unused branch."""
    delta = b.op("Sub", x, x_ref or reference(x))
    small = b.op("LessOrEqual", b.op("Abs", delta), b.scalar(EPS))
    return delta, small, b.op("Where", small, b.scalar(1.0), delta)


def per_change(b: GraphBuilder, share: str, safe: str, small: str, gradient: str) -> str:
    """share / Δx, or the gradient where the change is small."""
    return b.op("Where", small, gradient, b.op("Div", share, safe))


def pair_shares(b: GraphBuilder, op: str, a: str, a_ref: str, c: str,
                c_ref: str) -> tuple[str, str]:
    """The Shapley split of Δf(a, c) between a and c (f an elementwise op: Div, Max, ...),
    each the mean of its effect over the two orders of switching them on:
    ½(f(a, c) − f(a', c) + f(a, c') − f(a', c')) for a."""
    both, neither = b.op(op, a, c), b.op(op, a_ref, c_ref)
    a_only, c_only = b.op(op, a, c_ref), b.op(op, a_ref, c)
    half = b.scalar(0.5)
    share_a = b.op("Sub", b.op("Add", both, a_only), b.op("Add", c_only, neither))
    share_c = b.op("Sub", b.op("Add", both, c_only), b.op("Add", a_only, neither))
    return b.op("Mul", share_a, half), b.op("Mul", share_c, half)


def _others_vary(node: Node, b: GraphBuilder) -> bool:
    return any(b.needs(name) for name in node.inputs[1:])


def rescale(node: Node, dy, b: GraphBuilder):
    """The rescale rule: dx = dy · Δy/Δx, or the op's own gradient where |Δx| <= EPS."""
    gradient = RULES[node.op_type](node, dy, b)
    x, y = node.inputs[0], node.outputs[0]
    if not b.needs(x) or _others_vary(node, b):
        return gradient
    _, small, safe = change(b, x)
    delta_out = b.op("Mul", dy[0], b.op("Sub", y, reference(y)))
    return [per_change(b, delta_out, safe, small, gradient[0]), *gradient[1:]]


def rescale_max_pool(node: Node, dy, b: GraphBuilder):
    """Captum's maxpool rule: with t = max(y, y'), the share dy·(t − y') of each window's change
    goes to the input's argmax and dy·(y − t) to the reference's; both are then divided by
    the Δx of the position they land on (the gradient where |Δx| <= EPS). Overlapping windows
    add their shares up."""
    route = RULES[node.op_type]  # the table's rule scatters a window's value to its argmax
    gradient = route(node, dy, b)
    x, y = node.inputs[0], node.outputs[0]
    if not b.needs(x):
        return gradient
    twin = Node(node.op_type, reference(node.name), [reference(x)],
                [reference(o) if o else o for o in node.outputs], node.attrs, node.domain)
    top = b.op("Max", y, reference(y))
    own = route(node, [b.op("Mul", dy[0], b.op("Sub", top, reference(y)))], b)[0]
    theirs = route(twin, [b.op("Mul", dy[0], b.op("Sub", y, top))], b)[0]
    _, small, safe = change(b, x)
    return [per_change(b, b.op("Add", own, theirs), safe, small, gradient[0])]


def _midpoint(b: GraphBuilder, name: str) -> str:
    """(t + t') / 2 for a varying tensor t, typed and marked differentiable like t, so that the
    table's rule differentiates with respect to it; t itself when it does not vary."""
    if not b.needs(name):
        return name
    middle = b.op("Mul", b.op("Add", name, reference(name)), b.scalar(0.5))
    b.value_info[middle] = b.value_info[name]
    b.differentiable.add(middle)
    return middle


def shapley_product(node: Node, dy, b: GraphBuilder):
    """A bilinear op f(a, w) of two varying operands (Mul, MatMul, Gemm): the Shapley split
    of its change between the two, f(a, w) − f(a', w') = f(Δa, w̄) + f(ā, Δw) with ā, w̄ the
    midpoints, is exact. So each operand's multiplier is the op's gradient taken at the
    midpoints; for Mul it is SHAP DeepExplainer's rule for a product. With one varying
    operand the op is linear: its gradient."""
    if not (b.needs(node.inputs[0]) and b.needs(node.inputs[1])):
        return RULES[node.op_type](node, dy, b)
    middle = replace(node, inputs=[_midpoint(b, i) if i else i for i in node.inputs])
    return RULES[node.op_type](middle, dy, b)


def shapley_pair(node: Node, dy, b: GraphBuilder):
    """An elementwise op of two operands (Div, Max, Min, Pow). Both varying: each operand's
    Shapley share of the change (`pair_shares`; SHAP DeepExplainer's rule for RealDiv and
    Mul) over its own Δ. One varying: the whole change over its Δ, the rescale rule; a / c with
    a fixed divisor is linear, and keeps its gradient. Broadcast operands sum their shares.
    The gradient stands in where |Δ| <= EPS."""
    gradient = RULES[node.op_type](node, dy, b)
    if len(node.inputs) != 2:  # a Max or Min of three or more: no rule
        return gradient
    (a, c), y = node.inputs, node.outputs[0]
    moving = [b.needs(a), b.needs(c)]
    if not any(moving) or (node.op_type == "Div" and not moving[1]):
        return gradient
    if all(moving):
        shares = pair_shares(b, node.op_type, a, reference(a), c, reference(c))
    else:
        whole = b.op("Sub", y, reference(y))
        shares = [whole if m else None for m in moving]
    grads = []
    for operand, share, fallback in zip((a, c), shares, gradient, strict=True):
        if share is None:
            grads.append(None)
            continue
        _, small, safe = change(b, operand)
        summed = b.unbroadcast(b.op("Mul", dy[0], share), operand, y)
        grads.append(per_change(b, summed, safe, small, fallback))
    return grads
