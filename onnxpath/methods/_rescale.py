"""DeepLIFT on any ONNX model as a rule swap: the graph with its reference copy, the rule table,
one pass, and which ops keep their gradient.

DeepLIFT (Shrikumar et al. 2017, sections 3.3 and 3.5) replaces each derivative in the chain
rule by a *multiplier* m = Δy/Δx between the input x and a reference x'; linear ops keep their
gradient, which is their multiplier. Wherever every op on the way has a rule, the
contributions (x − x') ⊙ m sum to f(x) − f(x') ("summation-to-delta").

A rule needs both runs' activations of its node. Instead of Captum's batch of [x; x'] (which
breaks models with a fixed batch and other inputs that ride along), `with_reference` copies the
forward graph once, fed by a second input `onnxpath_reference/<input>`: the rules read the
reference activation of tensor t as `onnxpath_reference/t`, and both runs happen in one session.

The table (`DEEPLIFT`; rules in `_rescale_rules` and `_rescale_composite`):
- elementwise nonlinearities (the ReLU family, Sigmoid, Tanh, Softplus, Elu, HardSigmoid,
  HardSwish, Erf, Gelu, Exp, Log, Sqrt, Pow, ...): the rescale rule, m = Δy/Δx (the gradient
  where |Δx| <= 1e-10, Captum's eps). ReLU6 (Clip) gets it too: Captum gives nn.ReLU6 the
  plain gradient, which breaks summation-to-delta wherever a unit saturates, while the paper
  defines the rule for any elementwise nonlinearity;
- MaxPool, GlobalMaxPool: Captum's maxpool rule;
- products of two varying tensors (Mul, MatMul, Gemm: SiLU, GELU's x·Φ(x), gating,
  attention's QKᵀ and PV) and elementwise ops of two (Div, Max, Min, Pow): the Shapley split
  of the change between the two operands, SHAP DeepExplainer's rule (Lundberg & Lee 2017),
  which is exact; with one operand varying, the rescale rule (Div by a fixed divisor is
  linear);
- Softmax and LayerNormalization: the rules above applied to their decomposition into
  primitive ops, as DeepExplainer applies them to a graph that spells the ops out.
Every other op on the way that is not linear in what varies (InstanceNormalization,
ReduceMax, a Conv whose weights vary, a Max of three, ...) keeps its gradient: DeepLIFT
defines no rule for it, and summation-to-delta no longer holds exactly. `gradient_fallbacks`
names those ops, and the methods report them in extras["deeplift_gradient_fallback"].
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx

from onnxpath.autodiff import Node
from onnxpath.autodiff.builder import FLOAT_ELEM_TYPES
from onnxpath.autodiff.rules import RULES
from onnxpath.autodiff.walk import value_infos
from onnxpath.engine.gradient import GradientEngine
from onnxpath.errors import ModelError
from onnxpath.methods._common import _pad, fixed_batch, pick
from onnxpath.methods._rescale_composite import rescale_layer_norm, rescale_softmax
from onnxpath.methods._rescale_rules import (
    ELEMENTWISE,
    MAX_POOLS,
    PAIRS,
    PRODUCTS,
    reference,
    rescale,
    rescale_max_pool,
    shapley_pair,
    shapley_product,
)

# Linear ops, whose gradient is their DeepLIFT multiplier. In all varying operands jointly:
JOINTLY_LINEAR = ("Add", "Sub", "Sum", "Mean", "Neg", "Identity", "Concat", "Cast", "Dropout")
# In the first operand, the others fixed (shapes, indices, BatchNorm's statistics):
LINEAR_IN_FIRST = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Slice",
                   "Gather", "GatherElements", "GatherND", "Pad", "Expand", "Tile", "Split",
                   "Resize", "Upsample", "BatchNormalization", "AveragePool",
                   "GlobalAveragePool", "ReduceSum", "ReduceMean", "DepthToSpace",
                   "SpaceToDepth", "CumSum", "Trilu")
# Bilinear: linear while at most one of the first two operands varies (a bias may vary too).
BILINEAR = ("Conv", "ConvTranspose", "Einsum")
# Ops whose output depends on their input's shape only.
SHAPE_ONLY = ("Shape", "Size")

DEEPLIFT = {**{op: rescale for op in ELEMENTWISE if op in RULES},
            **{op: rescale_max_pool for op in MAX_POOLS if op in RULES},
            **{op: shapley_product for op in PRODUCTS}, **{op: shapley_pair for op in PAIRS},
            "Softmax": rescale_softmax, "LayerNormalization": rescale_layer_norm}


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
    declared = next((i for i in graph.input if i.name == input_name), None)
    if declared is None:
        raise ModelError(f"DeepLIFT attributes a graph input; '{input_name}' is not one")
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
    if op in PRODUCTS:  # one or two varying factors (and a Gemm's bias, which is added)
        return True
    if op in PAIRS:
        return len(moving) == 2
    if op in DEEPLIFT or op in LINEAR_IN_FIRST:
        return not any(moving[1:])
    if op in BILINEAR:
        return sum(moving[:2]) <= 1 and (op != "Einsum" or sum(moving) <= 1)
    if op == "Where":
        return not moving[0]
    return False

