"""DeepLIFT's rescale rule as a rule swap (Shrikumar et al. 2017, "Learning Important Features
Through Propagating Activation Differences", section 3.3 and 3.5.2).

DeepLIFT replaces each derivative in the chain rule by a *multiplier* m = Δy/Δx, the change of a
unit's output between the input x and the reference x' over the change of its input. A linear
op's multiplier is its gradient, so only the nonlinearities change rule. Because every
multiplier satisfies Δy = m Δx, the contributions (x − x') ⊙ m of the whole network sum to
f(x) − f(x') ("summation-to-delta"), wherever every nonlinearity on the way has a rule.

A rule needs both runs' activations of its node. Instead of Captum's batch of [x; x'] (which
breaks models with a fixed batch and other inputs that ride along), `with_reference` copies the
forward graph once, fed by a second input `onnxpath_reference/<input>`: the rules read the
reference activation of tensor t as `onnxpath_reference/t`, and both runs happen in one session.

- Elementwise nonlinearities (the ReLU family, Sigmoid, Tanh, Softplus, Elu, HardSigmoid,
  HardSwish, Erf, Gelu, Exp, Log, Sqrt, ...): the rescale rule, m = Δy/Δx, the plain gradient
  where |Δx| <= 1e-10 (Captum's `nonlinear`, same eps). ReLU6 (Clip) gets it too: Captum hooks
  nn.ReLU6 nowhere and gives it the gradient, which breaks summation-to-delta wherever a unit
  saturates; the paper's rule is defined for any elementwise nonlinearity.
- MaxPool: Captum's `maxpool` rule. Δy of each window goes to the argmax of the run whose
  window maximum is larger (the input's when y >= y', the reference's otherwise), then is
  divided by each position's Δx.
- Products of two varying tensors (Mul, MatMul, Gemm: SiLU and GELU's x·Φ(x), gating,
  attention's QKᵀ and PV) and quotients (Div): the Shapley split of the change between the two
  operands, SHAP DeepExplainer's rule for them (Lundberg & Lee 2017). It is exact, so
  summation-to-delta still holds.
- Linear ops (Conv, Gemm, Add, pooling by averages, BatchNormalization, reshapes, a Mul or
  MatMul with one varying operand, ...) keep their gradient, which is their multiplier.
- Every other op on the way (Softmax, LayerNormalization, ReduceMax, a Conv whose weights vary,
  ...) keeps its gradient too: DeepLIFT defines no rule for it, so summation-to-delta no longer
  holds exactly. `gradient_fallbacks` names them, and the methods report them in
  extras["deeplift_gradient_fallback"].
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx

from onnxpath.autodiff import GraphBuilder, Node
from onnxpath.autodiff.builder import FLOAT_ELEM_TYPES
from onnxpath.autodiff.rules import RULES
from onnxpath.autodiff.walk import value_infos
from onnxpath.engine.gradient import GradientEngine
from onnxpath.errors import ModelError
from onnxpath.methods._common import _pad, fixed_batch, pick

REFERENCE = "onnxpath_reference/"
EPS = 1e-10  # Captum's DeepLift eps: below it a unit's change counts as none

# Elementwise ops of one varying input: the rescale rule applies (their other inputs, a Clip's
# bounds, a PRelu's slope or a Pow's exponent, must be fixed).
ELEMENTWISE = ("Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "Tanh", "Softplus", "Softsign",
               "Elu", "Selu", "Celu", "HardSigmoid", "HardSwish", "Mish", "Erf", "Gelu", "Exp",
               "Log", "Sqrt", "Reciprocal", "Abs", "Pow", "Sin", "Cos", "ThresholdedRelu")
MAX_POOLS = ("MaxPool", "GlobalMaxPool")

# Linear ops, whose gradient is their DeepLIFT multiplier. In all varying operands jointly:
JOINTLY_LINEAR = ("Add", "Sub", "Sum", "Mean", "Neg", "Identity", "Concat", "Cast", "Dropout")
# In the first operand, the others fixed (shapes, indices, a divisor, BatchNorm's statistics):
LINEAR_IN_FIRST = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Slice",
                   "Gather", "GatherElements", "GatherND", "Pad", "Expand", "Tile", "Split",
                   "Resize", "Upsample", "BatchNormalization", "AveragePool",
                   "GlobalAveragePool", "ReduceSum", "ReduceMean", "DepthToSpace",
                   "SpaceToDepth", "CumSum", "Trilu")
# Bilinear: linear while at most one of the first two operands varies (a bias may vary too).
BILINEAR = ("Conv", "ConvTranspose", "Einsum")
# Ops whose output depends on their input's shape only.
SHAPE_ONLY = ("Shape", "Size")


def reference(name: str) -> str:
    """The reference run's copy of tensor `name`."""
    return REFERENCE + name


# --- the rules ---------------------------------------------------------------------------

def _small_change(b: GraphBuilder, x: str) -> tuple[str, str]:
    """(Δx, where |Δx| <= EPS): the rules fall back to the gradient there."""
    delta_in = b.op("Sub", x, reference(x))
    return delta_in, b.op("LessOrEqual", b.op("Abs", delta_in), b.scalar(EPS))


def _divide(b: GraphBuilder, numerator: str, delta_in: str, small: str, gradient: str) -> str:
    safe = b.op("Where", small, b.scalar(1.0), delta_in)  # no 0/0 even in the unused branch
    return b.op("Where", small, gradient, b.op("Div", numerator, safe))


def _others_vary(node: Node, b: GraphBuilder) -> bool:
    return any(b.needs(name) for name in node.inputs[1:])


def rescale(node: Node, dy, b: GraphBuilder):
    """The rescale rule: dx = dy · Δy/Δx, or the op's own gradient where |Δx| <= EPS."""
    gradient = RULES[node.op_type](node, dy, b)
    x, y = node.inputs[0], node.outputs[0]
    if not b.needs(x) or _others_vary(node, b):
        return gradient
    delta_in, small = _small_change(b, x)
    delta_out = b.op("Mul", dy[0], b.op("Sub", y, reference(y)))
    return [_divide(b, delta_out, delta_in, small, gradient[0]), *gradient[1:]]


def rescale_max_pool(node: Node, dy, b: GraphBuilder):
    """Captum's maxpool rule: with t = max(y, y'), the share dy·(t − y') of each window's change
    goes to the input's argmax and dy·(y − t) to the reference's; both are then divided by
    the Δx of the position they land on (the gradient where |Δx| <= EPS)."""
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
    delta_in, small = _small_change(b, x)
    return [_divide(b, b.op("Add", own, theirs), delta_in, small, gradient[0])]


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
    midpoints; for Mul it is SHAP DeepExplainer's rule for a product (Lundberg & Lee 2017).
    With one varying operand the op is linear: its gradient."""
    if not (b.needs(node.inputs[0]) and b.needs(node.inputs[1])):
        return RULES[node.op_type](node, dy, b)
    middle = replace(node, inputs=[_midpoint(b, i) if i else i for i in node.inputs])
    return RULES[node.op_type](middle, dy, b)


def shapley_divide(node: Node, dy, b: GraphBuilder):
    """a / c with both varying: each operand's share of the change is its Shapley value over
    the two orders of switching them, ½(f(a, c) − f(a', c) + f(a, c') − f(a', c')) for a,
    divided by its own Δ (SHAP DeepExplainer's RealDiv rule); the gradient where |Δ| <= EPS.
    With a fixed divisor the op is linear: its gradient."""
    gradient = RULES[node.op_type](node, dy, b)
    a, c = node.inputs
    if not (b.needs(a) and b.needs(c)):
        return gradient
    y, y_ref = node.outputs[0], reference(node.outputs[0])
    a_first = b.op("Div", a, reference(c))  # a switched on, c still at its reference
    c_first = b.op("Div", reference(a), c)
    shares = [b.op("Sub", b.op("Add", y, a_first), b.op("Add", c_first, y_ref)),
              b.op("Sub", b.op("Add", y, c_first), b.op("Add", a_first, y_ref))]
    grads = []
    for operand, share, fallback in zip((a, c), shares, gradient, strict=True):
        delta_in, small = _small_change(b, operand)
        safe = b.op("Where", small, b.scalar(1.0), delta_in)
        scaled = b.op("Div", b.op("Mul", dy[0], b.op("Mul", share, b.scalar(0.5))), safe)
        grads.append(b.op("Where", small, fallback, b.unbroadcast(scaled, operand, y)))
    return grads


PRODUCTS = ("Mul", "MatMul", "Gemm")
DEEPLIFT = {**{op: rescale for op in ELEMENTWISE if op in RULES},
            **{op: rescale_max_pool for op in MAX_POOLS if op in RULES},
            **{op: shapley_product for op in PRODUCTS}, "Div": shapley_divide}


# --- the graph with its reference copy ---------------------------------------------------

def with_reference(model: onnx.ModelProto, input_name: str) -> onnx.ModelProto:
    """A copy of `model` that also runs every node depending on `input_name` on a second input,
    `onnxpath_reference/<input>`, writing `onnxpath_reference/<tensor>`. Tensors that do not
    depend on the input (weights, other inputs such as an attention mask) are shared."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    reached, copies = {input_name}, []
    for proto in graph.node:
        node = Node.from_proto(proto)
        if not any(i in reached for i in [*node.inputs, *node.implicit] if i):
            continue
        if any(i in reached for i in node.implicit):
            raise ModelError(f"DeepLIFT cannot copy the {node.op_type} node '{node.name}': its "
                             "subgraph reads the attributed tensor")
        copy = onnx.NodeProto()
        copy.CopyFrom(proto)
        copy.input[:] = [reference(i) if i in reached else i for i in proto.input]
        copy.output[:] = [reference(o) if o else o for o in proto.output]
        if proto.name:
            copy.name = reference(proto.name)
        copies.append(copy)
        reached.update(o for o in proto.output if o)
    graph.node.extend(copies)
    declared = next(i for i in graph.input if i.name == input_name)
    twin = onnx.ValueInfoProto()
    twin.CopyFrom(declared)
    twin.name = reference(input_name)
    graph.input.append(twin)
    return result


def reference_engine(engine: GradientEngine) -> GradientEngine:
    """An engine over `with_reference(model)`, built once per engine."""
    key = ("deeplift-reference",)

    def build() -> GradientEngine:
        proto = with_reference(engine.info.proto, engine.input_name)
        return engine.rewritten(replace(engine.info, proto=proto), tag=key)
    return engine.derived(key, build)


def rescale_pass(engine: GradientEngine, x: np.ndarray, ref: np.ndarray,
                 seed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(logits of x, logits of ref, DeepLIFT multipliers of seed·logits w.r.t. the input) for
    rows x and their references, in one run (padded to a fixed model batch). A seed of None
    explains each row's predicted class."""
    twin = reference_engine(engine)
    rows, fixed = len(x), fixed_batch(engine) or 0
    ref_logits = reference(engine.info.logits)
    logits, grads, extras = twin.gradients(
        _pad(x, fixed), None if seed is None else _pad(seed, fixed),
        feeds={reference(engine.input_name): _pad(np.asarray(ref, x.dtype), fixed)},
        overrides=DEEPLIFT, extra_outputs=[ref_logits])
    return logits[:rows], extras[ref_logits][:rows], grads[engine.input_name][:rows]


def deltas(maps: np.ndarray, f_x: np.ndarray, f_baseline: np.ndarray,
           fallbacks: list[str]) -> list[dict]:
    """Per example: summation-to-delta's gap sum(A) − (f(x) − f(x')), both ends, and the ops
    that kept their gradient."""
    sums = maps.reshape(len(maps), -1).sum(axis=1, dtype=np.float64)
    return [{"delta": float(s - (a - b)), "f_x": float(a), "f_baseline": float(b),
             "deeplift_gradient_fallback": list(fallbacks)}
            for s, a, b in zip(sums, f_x, f_baseline, strict=True)]


def target_logits(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    return pick(logits, targets).astype(np.float64)


# --- which ops keep their gradient -------------------------------------------------------

def gradient_fallbacks(engine: GradientEngine) -> list[str]:
    """"OpType name" of each node between the input and the logits that DeepLIFT has no rule
    for and that is not linear in what varies: its gradient stands in for its multiplier.
    Found once per engine."""
    info = engine.info
    return engine.derived(("deeplift-fallbacks",),
                          lambda: _fallbacks(info.proto, info.input_name, info.logits))


def _fallbacks(model: onnx.ModelProto, input_name: str, logits: str) -> list[str]:
    nodes = [Node.from_proto(n) for n in model.graph.node]
    infos = value_infos(model)
    # `varies`: tensors whose values depend on the input (not through its shape only);
    # `carries`: float tensors that do, the ones the gradient walk gives adjoints.
    varies, carries = {input_name}, {input_name}
    for node in nodes:
        if node.op_type in SHAPE_ONLY:
            continue
        if any(i in varies for i in [*node.inputs, *node.implicit] if i):
            varies.update(o for o in node.outputs if o)
            carries.update(o for o in node.outputs if o and infos.get(
                o, (onnx.TensorProto.FLOAT,))[0] in FLOAT_ELEM_TYPES)
    needed = {logits}
    for node in reversed(nodes):
        if any(o in needed for o in node.outputs):
            needed.update(i for i in [*node.inputs, *node.implicit] if i)
    found = []
    for node in nodes:
        active = any(o in carries and o in needed for o in node.outputs if o)
        if active and not _has_rule(node, varies):
            found.append(f"{node.op_type} {node.name or node.outputs[0]}")
    return found


def _has_rule(node: Node, varies: set[str]) -> bool:
    """Whether the node's gradient (or the rule that replaces it) is its DeepLIFT multiplier."""
    moving = [bool(i) and i in varies for i in node.inputs]
    op = node.op_type
    if node.domain not in ("", "ai.onnx"):
        return False
    if op in JOINTLY_LINEAR:
        return True
    if op in PRODUCTS or op == "Div":
        return not any(moving[2:]) or op == "Gemm"  # a Gemm's bias is added
    if op in DEEPLIFT or op in LINEAR_IN_FIRST:
        return not any(moving[1:])
    if op in BILINEAR:
        return sum(moving[:2]) <= 1 and (op != "Einsum" or sum(moving) <= 1)
    if op == "Where":
        return not moving[0]
    return False

