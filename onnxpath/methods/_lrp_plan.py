"""Which LRP rule each node of an ONNX graph gets: the model read once, before any rule runs.

LRP (Bach et al. 2015) redistributes relevance layer by layer, and its rules are defined for
layers, not for ONNX's primitive ops. This module sorts every node between the attributed input
and the logits into one of five treatments, the way Zennit's composites sort torch modules:

- `layers`: Conv, Gemm and MatMul whose weights are constants, the input reached through
  operand 0. They get the composite's rule (epsilon, z+, alpha-beta, gamma, flat, w², box).
  A layer's bias may sit in a following Add (MatMul + Add, as exporters write Linear on 3-D
  inputs), and a BatchNormalization may follow a layer: both are folded into the layer's
  weight and bias (Zennit's MergeBatchNorm canonizer) and that node then passes relevance on.
- `passes`: relevance goes through unchanged (Zennit's Pass): pointwise activations, a
  BatchNormalization that follows no layer (Zennit: BatchNorm gets Pass), and pointwise affine
  ops with one activation and a constant (Add/Sub/Mul/Div by a constant, Neg), e.g. a table
  model's standardisation, which is a BatchNorm in all but name.
- `proportional`: Zennit's Norm rule, each input keeps the share it contributed: an Add, Sub or
  Sum of activations (a residual), AveragePool, GlobalAveragePool, ReduceMean, ReduceSum.
- structural ops (reshapes, slices, concatenation, padding, MaxPool's routing, resizing) keep
  their gradient rule: it moves relevance without changing its sum.
- `fallback`: every other op (Softmax, normalisation, attention products, Mul of two
  activations, Erf, ...) has no LRP rule; it keeps its gradient rule and is named in the
  result's extras, so nobody mistakes the map for pure LRP.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace

import numpy as np
import onnx
from onnx import numpy_helper

from onnxpath.autodiff import Node
from onnxpath.autodiff.builder import FLOAT_ELEM_TYPES
from onnxpath.autodiff.walk import value_infos

ACTIVATIONS = frozenset({
    "Relu", "Clip", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid",
    "Tanh", "Softplus", "Softsign", "HardSwish", "Gelu", "Mish", "ThresholdedRelu",
    "Neg"})
STRUCTURAL = frozenset({
    "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Split", "Slice",
    "Gather", "GatherElements", "GatherND", "Pad", "Expand", "Tile", "MaxPool",
    "GlobalMaxPool", "ReduceMax", "DepthToSpace", "SpaceToDepth", "Resize", "Upsample",
    "Identity", "Dropout", "Cast"})
PROPORTIONAL = frozenset({"AveragePool", "GlobalAveragePool", "ReduceMean", "ReduceSum"})
LAYER_OPS = frozenset({"Conv", "Gemm", "MatMul"})


@dataclass(frozen=True)
class Layer:
    """A linear layer in canonical form: `z = node(x; weight) + bias`, where `z` is the tensor
    `output` (the layer's own output, or that of its folded bias Add or BatchNormalization).

    `weight` has the node's own layout (Conv: out x in/groups x k..., Gemm: B as the node reads
    it with transB, MatMul: in x out); Gemm's alpha and beta are folded in. `bias` is one value
    per output channel, or None. `pad` is an explicit zero Pad whose output the layer reads:
    the flat, w² and box rules need to know which of its input's elements are padding."""

    kind: str  # "conv" or "dense"
    node: Node
    weight: np.ndarray
    bias: np.ndarray | None
    output: str
    pad: Node | None = None

    @property
    def out_axis(self) -> int:
        """The weight's axis of output channels."""
        if self.node.op_type == "Conv":
            return 0
        if self.node.op_type == "Gemm":
            return 0 if self.node.attr("transB", 0) else 1
        return self.weight.ndim - 1

    @property
    def channels(self) -> int:
        return self.weight.shape[self.out_axis]


@dataclass
class Plan:
    layers: dict[str, Layer] = field(default_factory=dict)  # by the node's first output
    passes: set[str] = field(default_factory=set)
    proportional: set[str] = field(default_factory=set)
    fallback: dict[str, str] = field(default_factory=dict)  # first output -> op type
    op_types: set[str] = field(default_factory=set)  # of every node with an LRP rule

    def ordered_layers(self, kinds: tuple[str, ...]) -> list[Layer]:
        return [layer for layer in self.layers.values() if layer.kind in kinds]

    @property
    def fallback_ops(self) -> list[str]:
        return sorted(set(self.fallback.values()))


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    found = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            found[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return found


def _active(nodes: list[Node], wrt: str, logits: str, infos) -> tuple[list[Node], set[str]]:
    """The nodes between `wrt` and `logits` that carry a float adjoint, as the walker picks
    them, and the tensors reached from `wrt`."""
    reached = {wrt}
    for node in nodes:
        if any(i in reached for i in node.inputs if i):
            reached.update(o for o in node.outputs
                           if o and infos.get(o, (onnx.TensorProto.FLOAT,))[0] in FLOAT_ELEM_TYPES)
    needed = {logits}
    for node in reversed(nodes):
        if any(o in needed for o in node.outputs):
            needed.update(i for i in node.inputs if i)
    active = [n for n in nodes if any(i in reached for i in n.inputs if i)
              and any(o in reached and o in needed for o in n.outputs if o)]
    return active, reached


def build_plan(model: onnx.ModelProto, wrt: str, logits: str) -> Plan:
    infos = value_infos(model)
    constants = _constants(model.graph)
    nodes = [Node.from_proto(n) for n in model.graph.node]
    active, reached = _active(nodes, wrt, logits, infos)
    consumers: dict[str, int] = defaultdict(int)
    for node in nodes:
        for name in node.inputs:
            consumers[name] += 1
    producer = {o: n for n in nodes for o in n.outputs if o}
    plan = Plan()
    by_output: dict[str, Layer] = {}  # a layer by the tensor its z currently is

    def foldable(name: str) -> Layer | None:
        """The layer whose z is `name`, when nothing else reads `name`."""
        layer = by_output.get(name)
        return layer if layer is not None and consumers[name] == 1 else None

    def fold(layer: Layer, new: Layer, node: Node) -> None:
        del by_output[layer.output]
        plan.layers[layer.node.outputs[0]] = by_output[new.output] = new
        plan.passes.add(node.outputs[0])

    for node in active:
        key, op = node.outputs[0], node.op_type
        live = [i for i in node.inputs if i in reached]
        if node.domain not in ("", "ai.onnx"):
            plan.fallback[key] = op
            continue
        if op in LAYER_OPS:
            layer = _layer(node, constants, reached, infos, producer)
            if layer is None:
                plan.fallback[key] = op
            else:
                plan.layers[key] = by_output[key] = layer
        elif op == "BatchNormalization":
            layer = foldable(node.inputs[0])
            folded = _fold_batch_norm(layer, node, constants, infos) if layer else None
            if folded is not None:
                fold(layer, folded, node)
            else:
                plan.passes.add(key)
        elif op in ("Add", "Sub", "Sum") and len(live) == len(node.inputs) > 1:
            # Shares of a broadcast sum are not one per input element: the gradient then.
            shape = infos.get(key, (0, None))[1]
            if all(_same_shape(infos.get(i, (0, None))[1], shape) for i in node.inputs):
                plan.proportional.add(key)
            else:
                plan.fallback[key] = op
        elif op == "Add" and len(live) == 1:
            other = next(i for i in node.inputs if i not in reached)
            layer = foldable(live[0])
            with_bias = _absorb_bias(layer, other, constants, node, infos) if layer else None
            if with_bias is not None:
                fold(layer, with_bias, node)
            else:
                plan.passes.add(key)
        elif op in ACTIVATIONS or _affine_in_one(node, reached):
            plan.passes.add(key)
        elif op in PROPORTIONAL:
            plan.proportional.add(key)
        elif op not in STRUCTURAL:
            plan.fallback[key] = op
    plan.op_types = {n.op_type for n in active
                     if n.outputs[0] in plan.layers or n.outputs[0] in plan.passes
                     or n.outputs[0] in plan.proportional}
    return plan


def _layer(node: Node, constants, reached, infos, producer) -> Layer | None:
    x, w = node.input(0), node.input(1)
    if x not in reached or w not in constants or any(i in reached for i in node.inputs[1:]):
        return None
    weight = np.asarray(constants[w], dtype=np.float64)
    bias = node.input(2)
    if bias is not None and bias not in constants:
        return None
    pad = producer.get(x)
    if pad is not None and not (pad.op_type == "Pad" and pad.attr("mode", "constant") ==
                                "constant" and _zero_fill(pad, constants)):
        pad = None
    if node.op_type == "Conv":
        b = None if bias is None else np.asarray(constants[bias], np.float64).reshape(-1)
        return Layer("conv", node, weight, b, node.outputs[0], pad)
    if node.op_type == "MatMul":
        if weight.ndim != 2 or len(infos.get(x, (0, ()))[1] or ()) < 1:
            return None
        return Layer("dense", node, weight, None, node.outputs[0], pad)
    if node.attr("transA", 0):
        return None
    alpha, beta = node.attr("alpha", 1.0), node.attr("beta", 1.0)
    out = weight.shape[0 if node.attr("transB", 0) else 1]
    b = None
    if bias is not None:
        value = np.asarray(constants[bias], np.float64) * beta
        if value.size not in (1, out) or value.ndim > 1 and value.shape[0] != 1:
            return None
        b = np.broadcast_to(value.reshape(-1), (out,)).copy()
    plain = replace(node, attrs={**node.attrs, "alpha": 1.0, "beta": 1.0})
    return Layer("dense", plain, weight * alpha, b, node.outputs[0], pad)


def _same_shape(a, b) -> bool:
    """Equal ranks and equal static dims; symbolic dims (the batch, named differently by
    shape inference on either side) are taken to agree."""
    if a is None or b is None or len(a) != len(b):
        return False
    return all(not (isinstance(p, int) and isinstance(q, int)) or p == q
               for p, q in zip(a, b, strict=True))


def _affine_in_one(node: Node, reached: set[str]) -> bool:
    """A pointwise op linear in its one activation operand, the others constants or tensors
    not computed from the attributed input (a position embedding, an attention mask)."""
    live = [i for i in node.inputs if i in reached]
    if node.op_type in ("Add", "Sub", "Mul", "Sum"):
        return len(live) == 1
    return node.op_type == "Div" and live == [node.inputs[0]]


def _zero_fill(pad: Node, constants) -> bool:
    value = pad.input(2)
    return value is None or (value in constants and not np.any(constants[value]))


def _fold_batch_norm(layer: Layer, node: Node, constants, infos) -> Layer | None:
    """The layer with BatchNormalization (inference mode) folded into its weight and bias:
    y = s (z - mean) + beta with s = scale / sqrt(var + eps), so W' = s W, b' = s (b - mean)
    + beta (Zennit's MergeBatchNorm)."""
    if node.attr("training_mode", 0) or not all(i in constants for i in node.inputs[1:5]):
        return None
    shape = infos.get(node.outputs[0], (0, None))[1]
    if layer.kind == "dense" and (shape is None or len(shape) != 2):
        return None  # BatchNormalization's channel axis 1 is a dense layer's only on N x C
    scale, beta, mean, var = (np.asarray(constants[i], np.float64).reshape(-1)
                              for i in node.inputs[1:5])
    if scale.size != layer.channels:
        return None
    s = scale / np.sqrt(var + node.attr("epsilon", 1e-5))
    shape = [1] * layer.weight.ndim
    shape[layer.out_axis] = -1
    bias = layer.bias if layer.bias is not None else np.zeros(layer.channels)
    return replace(layer, weight=layer.weight * s.reshape(shape),
                   bias=s * (bias - mean) + beta, output=node.outputs[0])


def _absorb_bias(layer: Layer, other: str, constants, node: Node, infos) -> Layer | None:
    """The layer with a following Add of a per-channel constant taken as its bias (MatMul +
    Add is how exporters write a Linear layer on 3-D inputs)."""
    if layer.bias is not None or other not in constants:
        return None
    value = np.asarray(constants[other], np.float64)
    out_shape = infos.get(node.outputs[0], (0, None))[1]
    z_shape = infos.get(layer.output, (0, None))[1]
    if out_shape is None or out_shape != z_shape:
        return None
    channel_axis = 1 if layer.kind == "conv" else len(out_shape) - 1
    full = [1] * len(out_shape)
    full[channel_axis] = layer.channels
    try:
        per_channel = np.broadcast_to(value, full) if value.ndim <= len(full) else None
    except ValueError:
        return None
    if per_channel is None or value.ndim > len(full):
        return None
    trimmed = value.reshape((1,) * (len(full) - value.ndim) + value.shape)
    if any(d != 1 for i, d in enumerate(trimmed.shape) if i != channel_axis):
        return None
    return replace(layer, bias=np.broadcast_to(trimmed, full).reshape(-1).copy(),
                   output=node.outputs[0])
