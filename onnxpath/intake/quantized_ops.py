"""One float rewrite per quantized op (see quantized.py): each reads its quantized inputs as
shadows, computes what the op computes in float32, and gives the shadow of its integer output.
A handler returns True when it writes the node's own outputs anew (the node is then dropped),
False when the node may stay for other readers of its integers, None when it cannot rewrite
this node.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from onnxpath.intake.quantized import (
    MS,
    PASS_THROUGH,
    _at_bottom,
    _attrs,
    _centred,
    _channel_shape,
    _input,
    _out_type,
    _rank,
    _ratio,
    _real,
    _relu_removed,
    handles,
)
from onnxpath.intake.shadows import FLOAT, Shadows

INT32 = TensorProto.INT32


def _set(s: Shadows, tensor: str, shadow: str, elem: int) -> bool:
    s.of[tensor], s.qtype[tensor] = shadow, elem
    return False


def _requantized(s: Shadows, node: onnx.NodeProto, steps: str, zero_point: str | None,
                 elem: int) -> bool:
    """The node's output as the requantized `steps`; a zero point at the bottom of the range
    after a linear op is a fused ReLU (quantized.py)."""
    relu = _at_bottom(s, zero_point, elem)
    return _set(s, node.output[0], s.requantize(steps, zero_point, elem, relu, node.output[0]),
                elem)


# --- QDQ ------------------------------------------------------------------------------------

@handles("QuantizeLinear")
@handles("QuantizeLinear", domain=MS)
def quantize_linear(node: onnx.NodeProto, s: Shadows):
    attrs = _attrs(node)
    if attrs.get("block_size", 0):
        return None  # blocked quantization (weights only in practice)
    x, scale, zp = node.input[0], node.input[1], _input(node, 2)
    elem = s.elem(zp) if zp else attrs.get("output_dtype", TensorProto.UINT8) or \
        TensorProto.UINT8
    attrs.pop("block_size", None)
    shadow = s.quantize(x, scale, zp, elem, relu=_relu_removed(s, x, zp, elem),
                        rank=_rank(s, x), attrs=attrs, domain=node.domain)
    return _set(s, node.output[0], shadow, elem)


@handles("DequantizeLinear")
@handles("DequantizeLinear", domain=MS)
def dequantize_linear(node: onnx.NodeProto, s: Shadows):
    x = node.input[0]
    s.dequantize(s.of[x], node.input[1], _input(node, 2), _attrs(node).get("axis"),
                 _rank(s, x), out=node.output[0])
    return True


def constant_dequantize(node: onnx.NodeProto, s: Shadows) -> bool:
    """A com.microsoft DequantizeLinear of constant integers (weights) as the float constant it
    computes, (q − zero_point) · scale: shape inference cannot see through the contrib op, and
    the rules need the weights' shape. False when an input is not a constant."""
    q, scale, zp = s.value(node.input[0]), s.value(node.input[1]), s.value(_input(node, 2))
    if q is None or scale is None or (_input(node, 2) and zp is None):
        return False
    axis = _attrs(node).get("axis", 1)
    shape = None if scale.size == 1 else _channel_shape(q.ndim, axis % max(q.ndim, 1))
    centred = q.astype(np.int64) - (0 if zp is None else
                                   (zp.reshape(shape) if shape else zp).astype(np.int64))
    scale = scale.astype(np.float32)
    value = centred.astype(np.float32) * (scale.reshape(shape) if shape else scale)
    s.initializers.append(numpy_helper.from_array(value.astype(np.float32), node.output[0]))
    return True


@handles("DynamicQuantizeLinear")
def dynamic_quantize_linear(node: onnx.NodeProto, s: Shadows):
    # The node stays: its scale and zero point are the statistics of x it computes, and its
    # integers are the deployed ones. Its rule (autodiff/rules/quantized.py) passes nothing
    # back through the scale.
    x = node.input[0]
    y, scale, zp = node.output[:3]
    x32 = x if s.elem(x, FLOAT) == FLOAT else s.op("Cast", x, to=FLOAT)
    steps = s.op("Div", x32, scale)
    q = s.op("Cast", y, to=FLOAT)
    return _set(s, y, s.straight_through(q, steps, zp, TensorProto.UINT8), TensorProto.UINT8)


@handles("Cast")
def cast(node: onnx.NodeProto, s: Shadows):
    to = _attrs(node)["to"]
    shadow = s.of[node.input[0]]
    if to in (FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE):
        s.op("Cast", shadow, to=to, out=node.output[0])
        return True
    return _set(s, node.output[0], shadow, to)


# --- integer matrix products ----------------------------------------------------------------

def _scaled(s: Shadows, acc: str, scale: str, out: str | None = None) -> str:
    """acc × scale, the scale written first: ONNX Runtime folds a constant second input of a
    Mul into the Conv before it (ConvMulFusion), which would turn the exact integer
    accumulation into a float one and move the rounding."""
    return s.op("Mul", scale, acc, out=out)


def _conv_attrs(node: onnx.NodeProto) -> dict:
    return {k: v for k, v in _attrs(node).items()
            if k in ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")}


@handles("QLinearConv")
def qlinear_conv(node: onnx.NodeProto, s: Shadows):
    x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp = node.input[:8]
    bias = _input(node, 8)
    rank = _rank(s, w)
    weights = _centred(s, w, w_zp, _channel_shape(rank, 0))
    inputs = [_centred(s, x, x_zp), weights] + ([s.as_float(bias)] if bias else [])
    acc = s.op("Conv", *inputs, **_conv_attrs(node))
    steps = _scaled(s, acc, _ratio(s, [x_scale, w_scale], y_scale, _channel_shape(rank)))
    elem = s.elem(y_zp)
    return _requantized(s, node, steps, y_zp, elem)


def _row_shape(s: Shadows, param: str | None) -> tuple | None:
    """Per-row parameters of a matrix product's left input broadcast as a column."""
    value = s.value(param) if param else None
    return (-1, 1) if value is not None and value.ndim == 1 and value.size > 1 else None


@handles("QLinearMatMul")
def qlinear_matmul(node: onnx.NodeProto, s: Shadows):
    a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp = node.input[:8]
    rows = _row_shape(s, a_scale)
    acc = s.op("MatMul", _centred(s, a, a_zp, rows), _centred(s, b, b_zp))
    if rows is None:  # per-tensor a: the same float32 product as ONNX Runtime's
        steps = _scaled(s, acc, _ratio(s, [a_scale, b_scale], y_scale))
    else:
        steps = _scaled(s, _scaled(s, acc, _ratio(s, [a_scale], None, rows)),
                        _ratio(s, [b_scale], y_scale))
    elem = s.elem(y_zp)
    return _requantized(s, node, steps, y_zp, elem)


@handles("QGemm", domain=MS)
def qgemm(node: onnx.NodeProto, s: Shadows):
    a, a_scale, a_zp, b, b_scale, b_zp = node.input[:6]
    bias, y_scale, y_zp = _input(node, 6), _input(node, 7), _input(node, 8)
    attrs = _attrs(node)
    trans_b = attrs.get("transB", 0)
    b_shape = (-1, 1) if trans_b else None
    inputs = [_centred(s, a, a_zp), _centred(s, b, b_zp, b_shape)]
    inputs += [s.as_float(bias)] if bias else []
    acc = s.op("Gemm", *inputs, transA=attrs.get("transA", 0), transB=trans_b)
    scale = _ratio(s, [float(attrs.get("alpha", 1.0)), a_scale, b_scale], y_scale)
    if not y_scale:  # a float output
        _scaled(s, acc, scale, out=node.output[0])
        return True
    elem = s.elem(y_zp) if y_zp else s.elem(a)
    steps = _scaled(s, acc, scale)
    return _requantized(s, node, steps, y_zp, elem)


@handles("ConvInteger")
def conv_integer(node: onnx.NodeProto, s: Shadows):
    x, w, x_zp, w_zp = node.input[0], node.input[1], _input(node, 2), _input(node, 3)
    weights = _centred(s, w, w_zp, _channel_shape(_rank(s, w), 0))
    acc = s.op("Conv", _centred(s, x, x_zp), weights, **_conv_attrs(node))
    return _set(s, node.output[0], acc, INT32)


@handles("MatMulInteger")
def matmul_integer(node: onnx.NodeProto, s: Shadows):
    a, b, a_zp, b_zp = node.input[0], node.input[1], _input(node, 2), _input(node, 3)
    acc = s.op("MatMul", _centred(s, a, a_zp, _row_shape(s, a_zp)), _centred(s, b, b_zp))
    return _set(s, node.output[0], acc, INT32)


@handles("MatMulIntegerToFloat", domain=MS)
def matmul_integer_to_float(node: onnx.NodeProto, s: Shadows):
    a, b, a_scale, b_scale = node.input[:4]
    a_zp, b_zp, bias = _input(node, 4), _input(node, 5), _input(node, 6)
    acc = s.op("MatMul", _centred(s, a, a_zp, _row_shape(s, a_zp)), _centred(s, b, b_zp))
    scaled = _scaled(s, acc, _ratio(s, [a_scale, b_scale], None),
                  out=None if bias else node.output[0])
    if bias:
        s.op("Add", scaled, bias, out=node.output[0])
    return True


@handles("DynamicQuantizeMatMul", domain=MS)
def dynamic_quantize_matmul(node: onnx.NodeProto, s: Shadows):
    a, b, b_scale = node.input[:3]
    b_zp, bias = _input(node, 3), _input(node, 4)
    quantized = [s.fresh("a_quantized"), s.fresh("a_scale"), s.fresh("a_zero_point")]
    s.nodes.append(onnx.helper.make_node("DynamicQuantizeLinear", [a], quantized,
                                         name=s.fresh("DynamicQuantizeLinear")))
    s.types[quantized[1]] = FLOAT
    dynamic_quantize_linear(s.nodes[-1], s)
    acc = s.op("MatMul", _centred(s, quantized[0], quantized[2]), _centred(s, b, b_zp))
    scaled = _scaled(s, acc, s.op("Mul", quantized[1], s.as_float(b_scale)),
                  out=None if bias else node.output[0])
    if bias:
        s.op("Add", scaled, bias, out=node.output[0])
    return True


# --- com.microsoft QLinear ops: dequantize, the float op, quantize ----------------------------

def _quantized_output(s: Shadows, node: onnx.NodeProto, real: str, scale: str,
                      zero_point: str | None, like: str, relu: bool = False) -> bool:
    elem = _out_type(s, zero_point, like)
    relu = relu and _at_bottom(s, zero_point, elem)
    return _set(s, node.output[0], s.quantize(real, scale, zero_point, elem, relu=relu), elem)


@handles("QLinearAdd", "QLinearMul", domain=MS)
def qlinear_binary(node: onnx.NodeProto, s: Shadows):
    a, a_scale, a_zp, b, b_scale, b_zp, c_scale = node.input[:7]
    c_zp = _input(node, 7)
    op = "Add" if node.op_type == "QLinearAdd" else "Mul"
    real = s.op(op, _real(s, a, a_scale, a_zp or None), _real(s, b, b_scale, b_zp or None))
    return _quantized_output(s, node, real, c_scale, c_zp, a, relu=op == "Add")


def _unary(node: onnx.NodeProto, s: Shadows, op_type: str, **attrs) -> bool:
    x, x_scale, x_zp, y_scale, y_zp = (_input(node, i) for i in range(5))
    real = s.op(op_type, _real(s, x, x_scale, x_zp), **attrs)
    return _quantized_output(s, node, real, y_scale, y_zp, x)


@handles("QLinearSigmoid", domain=MS)
def qlinear_sigmoid(node: onnx.NodeProto, s: Shadows):
    return _unary(node, s, "Sigmoid")


@handles("QLinearLeakyRelu", domain=MS)
def qlinear_leaky_relu(node: onnx.NodeProto, s: Shadows):
    return _unary(node, s, "LeakyRelu", alpha=float(_attrs(node).get("alpha", 0.01)))


@handles("QLinearGlobalAveragePool", domain=MS)
def qlinear_global_average_pool(node: onnx.NodeProto, s: Shadows):
    if not _attrs(node).get("channels_last", 0):
        return _unary(node, s, "GlobalAveragePool")
    rank = _rank(s, node.input[0])
    if rank is None:
        return None
    axes = list(range(1, rank - 1))
    if s.opset >= 18:
        x, x_scale, x_zp, y_scale, y_zp = (_input(node, i) for i in range(5))
        real = s.op("ReduceMean", _real(s, x, x_scale, x_zp), s.const(axes, "int64"),
                    keepdims=1)
        return _quantized_output(s, node, real, y_scale, y_zp, x)
    return _unary(node, s, "ReduceMean", axes=axes, keepdims=1)


@handles("QLinearAveragePool", domain=MS)
def qlinear_average_pool(node: onnx.NodeProto, s: Shadows):
    attrs = _attrs(node)
    if attrs.pop("channels_last", 0):
        return None
    return _unary(node, s, "AveragePool", **attrs)


@handles("QLinearSoftmax", domain=MS)
def qlinear_softmax(node: onnx.NodeProto, s: Shadows):
    attrs = _attrs(node)
    rank = _rank(s, node.input[0])
    axis = attrs.get("axis", -1)
    if attrs.get("opset", 13) < 13 and (rank is None or axis % rank != rank - 1):
        return None  # opset-11 Softmax flattens from `axis`: only the last axis is the same
    return _unary(node, s, "Softmax", axis=axis)


@handles("QLinearConcat", domain=MS)
def qlinear_concat(node: onnx.NodeProto, s: Shadows):
    y_scale, y_zp = node.input[0], _input(node, 1)
    triples = [node.input[i:i + 3] for i in range(2, len(node.input), 3)]
    parts = [_real(s, x, scale, zp or None) for x, scale, zp in triples]
    real = s.op("Concat", *parts, axis=_attrs(node)["axis"])
    return _quantized_output(s, node, real, y_scale, y_zp, triples[0][0])


# --- integers moved, not computed -----------------------------------------------------------

@handles(*PASS_THROUGH)
def pass_through(node: onnx.NodeProto, s: Shadows):
    """The same op on the shadows: a MaxPool, Reshape or Concat of integers is the same
    integers in float32. Other integer inputs (shapes, indices, axes) stay as they are."""
    attrs = _attrs(node)
    if node.op_type == "Resize" and attrs.get("mode", b"nearest") not in (b"nearest", "nearest"):
        return None  # ONNX Runtime interpolates integers with its own rounding
    data = PASS_THROUGH[node.op_type]
    positions = range(len(node.input)) if data == "all" else data
    inputs = list(node.input)
    shadowed = next(i for i in node.input if i in s.of)
    for i in positions:
        if i < len(inputs) and inputs[i]:
            inputs[i] = s.as_float(inputs[i])
    outputs = [s.fresh(f"{node.op_type.lower()}_out") for _ in node.output]
    clone = onnx.helper.make_node(node.op_type, inputs, outputs, name=s.fresh(node.op_type))
    clone.attribute.extend(node.attribute)
    s.nodes.append(clone)
    data_outputs = range(len(outputs)) if node.op_type == "Split" else (0,)
    for i in data_outputs:
        _set(s, node.output[i], outputs[i], s.qtype.get(shadowed, TensorProto.UINT8))
    return False
