"""Quantized models (QDQ, QOperator, dynamic) rewritten so that they differentiate, by
straight-through estimation, at their own quantized forward pass.

The convention is quantization-aware training's (Bengio, Léonard & Courville 2013; Jacob et
al. 2018, "Quantization and training of neural networks for efficient integer-arithmetic-only
inference"): rounding passes the gradient unchanged, saturation stops it. d dequant(quant(x))
/ dx = 1 where the rounded value lies inside the integer range, 0 outside, as
torch.fake_quantize_per_tensor_affine's backward.

Why a rewrite and not gradient rules for QuantizeLinear, QLinearConv, ...:
- the walker carries adjoints through float tensors only (integers are indices, masks and
  shapes), so an int8 activation is where the gradient stopped: the silent all-zero map;
- half of these ops are com.microsoft's (QGemm, QLinearAdd, ...), outside the rule table;
- a rule per QOperator op would repeat the dequantize / requantize algebra a dozen times.
Instead every integer activation gets a float32 *shadow* (intake/shadows.py): a tensor with
exactly its integers, built from standard ops whose ordinary rules give the straight-through
gradient. Every op that reads quantized tensors is rewritten on shadows: QLinearConv becomes
Conv on (x − x_zp) and (w − w_zp), times x_scale·w_scale / y_scale, requantized; QLinearAdd
becomes Add of the dequantized inputs, quantized; MatMulInteger is MatMul on centred
shadows; DequantizeLinear is (shadow − zp)·scale. Data-movement ops on integers (MaxPool,
Reshape, Concat...) run on the shadows. The integers themselves come from ONNX Runtime's own
QuantizeLinear on the rewritten float values, accumulations of integers are exact in float32
below 2^24, and QDQ groups first become the QLinearConv / QLinearMatMul / QGemm that ONNX
Runtime fuses them into (intake/qdq.py), so the forward pass is the deployed one (measured:
identical logits on quantized EfficientNet-Lite0, QDQ, QOperator and dynamic): the map explains
the model that runs, not its float original.

ReLU: the QDQ quantizer removes a Relu that precedes a QuantizeLinear, because a zero point at
the bottom of the integer range (uint8 zp = 0, int8 zp = −128) clamps at 0 just as well, and
the QOperator quantizer folds it into QLinearConv's output range the same way. That clamp is
the ReLU. Where a zero point sits at the bottom of the range and the quantized value comes
from a linear op (Conv, Gemm, MatMul, Add: whose outputs have no reason to be non-negative
unless a ReLU followed), an explicit Relu is put back in front of the quantizer. The values do
not change (quantizing Relu(x) gives the same integers as quantizing x), and the pathway method
(which masks it) and guided backprop (which hooks it) see the ReLU. The gradient stays the
bare straight-through estimate: x in [-scale/2, 0] rounds into the range, so it passes there
too, through a stand-in beside the Relu (Shadows.clamp_as_relu); a Relu alone would gate at 0.

Exactness: integer sums are exact in float32 while partial sums stay below 2^24 (always for
int8 kernels up to about 250 taps, in practice far beyond); past that a requantized value can
move by one step at rare elements.

Dynamic quantization (DynamicQuantizeLinear): the scale and zero point are statistics of x.
Straight-through estimation treats them as constants (inside the range the dequantized value
is x whatever the scale), which `autodiff/rules/quantized.py` states as their rule.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper

from onnxpath.autodiff.rules import quantized as _rules  # noqa: F401  (DynamicQuantizeLinear)
from onnxpath.autodiff.walk import prune_unused, value_infos
from onnxpath.errors import ModelError
from onnxpath.intake.qdq import qdq_as_qoperator
from onnxpath.intake.shadows import FLOAT, QUANT_RANGE, Shadows

MS = "com.microsoft"
# Ops whose output has no reason to be non-negative: a zero point at the bottom of the range
# right after one of them is a removed ReLU.
LINEAR = {"Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sum", "BatchNormalization",
          "QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd"}
# Ops that only move, pick or compare values: the same op on the shadows computes the same
# integers. Value: the positions of their data inputs ("all": every input).
PASS_THROUGH = {"MaxPool": (0,), "GlobalMaxPool": (0,), "Reshape": (0,), "Flatten": (0,),
                "Transpose": (0,), "Squeeze": (0,), "Unsqueeze": (0,), "Concat": "all",
                "Slice": (0,), "Split": (0,), "Gather": (0,), "GatherElements": (0,),
                "Identity": (0,), "Expand": (0,), "Tile": (0,), "DepthToSpace": (0,),
                "SpaceToDepth": (0,), "Pad": (0, 2), "ReduceMax": (0,), "ReduceMin": (0,),
                "Max": "all", "Min": "all", "Where": (1, 2), "Resize": (0,)}

# Integer readers whose outputs carry no gradient anyway (indices, comparisons, shapes).
NO_ADJOINT = {"ArgMax", "ArgMin", "Shape", "Size", "Equal", "Greater", "Less", "GreaterOrEqual",
              "LessOrEqual", "NonZero"}
# (domain, op type) -> handler(node, Shadows) in quantized_ops.py: True when the node's own
# outputs are written anew, False when it may stay, None when it cannot be rewritten.
HANDLERS: dict[tuple[str, str], Callable] = {}


def handles(*op_types: str, domain: str = ""):
    def register(fn):
        for op_type in op_types:
            HANDLERS[(domain, op_type)] = fn
        return fn

    return register


def _quantized(node: onnx.NodeProto) -> bool:
    return _key(node) in HANDLERS and node.op_type not in {*PASS_THROUGH, "Cast"}


def _key(node: onnx.NodeProto) -> tuple[str, str]:
    return ("" if node.domain in ("", "ai.onnx") else node.domain, node.op_type)


def quantized_as_float(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` whose quantized ops run on float shadows (see the module docstring);
    `model` itself when it has none. Output names and values are kept."""
    if not any(_quantized(n) for n in model.graph.node):
        return model
    model = qdq_as_qoperator(onnx.ModelProto.FromString(model.SerializeToString()))
    graph = model.graph
    s = Shadows(model, value_infos(model))
    dynamic = _dynamic(graph)
    rewritten, unsupported = [], set()
    for node in graph.node:
        start = len(s.nodes)
        handler = HANDLERS.get(_key(node))
        touched = _touches(node, s, dynamic)
        replaced = False
        if not touched and _key(node) == (MS, "DequantizeLinear"):
            replaced = quantized_ops.constant_dequantize(node, s)
        if touched:
            if handler is None:
                if node.op_type not in NO_ADJOINT:
                    unsupported.add(node.op_type)
            else:
                try:
                    replaced = handler(node, s)
                except ValueError as err:
                    raise ModelError(f"cannot rewrite quantized {node.op_type} node "
                                     f"'{node.name or node.output[0]}': {err}") from err
                if replaced is None:
                    unsupported.add(node.op_type)
        if not replaced:
            rewritten.append(node)
        rewritten.extend(s.nodes[start:])
    if unsupported:
        warnings.warn(f"quantized {', '.join(sorted(unsupported))} has no float rewrite: "
                      "gradients do not pass through it", stacklevel=2)
    del graph.node[:]
    graph.node.extend(rewritten)
    graph.initializer.extend(s.initializers)
    graph.value_info.extend(s.value_info)
    model = prune_unused(model)
    _tidy(model)
    return model


def _dynamic(graph: onnx.GraphProto) -> set[str]:
    """Tensors computed from the graph inputs (not from weights alone)."""
    initializers = {t.name for t in graph.initializer}
    found = {i.name for i in graph.input if i.name not in initializers}
    for node in graph.node:
        if any(i in found for i in node.input if i):
            found.update(o for o in node.output if o)
    return found


def _touches(node: onnx.NodeProto, s: Shadows, dynamic: set[str]) -> bool:
    """Whether `node` reads a shadowed integer, or quantizes a run-time float tensor."""
    if node.op_type in ("QuantizeLinear", "DynamicQuantizeLinear", "DynamicQuantizeMatMul"):
        return node.input[0] in dynamic and s.elem(node.input[0], FLOAT) in \
            (FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE)
    return any(i in s.of for i in node.input if i)


def _tidy(model: onnx.ModelProto) -> None:
    graph = model.graph
    present = {n for node in graph.node for n in (*node.input, *node.output)}
    kept = [v for v in graph.value_info if v.name in present]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    if not any(n.domain == MS for n in graph.node):
        opsets = [o for o in model.opset_import if o.domain != MS]
        del model.opset_import[:]
        model.opset_import.extend(opsets)
    with contextlib.suppress(Exception):  # a courtesy: normalise infers shapes again
        inferred = onnx.shape_inference.infer_shapes(model)
        model.CopyFrom(inferred)


# --- helpers the handlers share ---------------------------------------------------------------

def _input(node: onnx.NodeProto, i: int) -> str | None:
    return node.input[i] if i < len(node.input) and node.input[i] else None


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _rank(s: Shadows, name: str) -> int | None:
    value = s.value(name)
    if value is not None:
        return value.ndim
    shape = s.shapes.get(name)
    return None if shape is None else len(shape)


def _at_bottom(s: Shadows, zero_point: str | None, elem: int) -> bool:
    value = np.zeros(()) if not zero_point else s.value(zero_point)
    return value is not None and bool(np.all(value == QUANT_RANGE[elem][0]))


def _relu_removed(s: Shadows, x: str, zero_point: str | None, elem: int) -> bool:
    """A zero point at the bottom of the range right after a linear op: a removed ReLU."""
    producer = s.producer.get(x)
    return producer is not None and producer.op_type in LINEAR and \
        _at_bottom(s, zero_point, elem)


def _out_type(s: Shadows, zero_point: str | None, like: str) -> int:
    return s.elem(zero_point) if zero_point else s.elem(like)


def _centred(s: Shadows, tensor: str, zero_point: str | None,
             shape: tuple | None = None) -> str:
    """tensor − zero_point in float32; computed here once when both are constants (weights)."""
    value, zp = s.value(tensor), s.value(zero_point) if zero_point else np.zeros((), np.float32)
    if value is not None and zp is not None:
        zp = zp.astype(np.float32)
        return s.const(value.astype(np.float32) - (zp.reshape(shape) if shape and zp.size > 1
                                                   else zp))
    x = s.as_float(tensor)
    return x if not zero_point else s.op("Sub", x, s.as_float(zero_point, shape))


def _ratio(s: Shadows, numerators: list, denominator: str | None,
           shape: tuple | None = None) -> str:
    """Product of `numerators` (scale names or floats) / denominator, in float32 and in that
    order, as ONNX Runtime's integer kernels compute their requantization scale."""
    values = [np.float32(n) if isinstance(n, float) else s.value(n) for n in numerators]
    if denominator:
        values.append(s.value(denominator))
    if all(v is not None for v in values):
        product = np.float32(1.0)  # 1·v is v exactly: the same float32 products as ORT's
        for v in values[:len(numerators)]:
            product = product * np.asarray(v, np.float32)
        if denominator:
            product = product / values[-1].astype(np.float32)
        product = np.asarray(product, np.float32)
        return s.const(product.reshape(shape) if shape and product.size > 1 else product)
    names = [s.const(n) if isinstance(n, float) else s.as_float(n, shape) for n in numerators]
    result = names[0]
    for name in names[1:]:
        result = s.op("Mul", result, name)
    return s.op("Div", result, s.as_float(denominator)) if denominator else result


def _real(s: Shadows, tensor: str, scale: str, zero_point: str | None) -> str:
    """The dequantized value of a quantized input (shadowed or constant)."""
    return s.dequantize(s.as_float(tensor), scale, zero_point)


def _channel_shape(rank: int | None, axis: int = 1) -> tuple:
    if rank is None:
        raise ValueError("per-channel parameters on a tensor of unknown rank")
    return tuple(-1 if i == axis else 1 for i in range(rank))


from onnxpath.intake import quantized_ops  # noqa: E402,F401  (fills HANDLERS)
