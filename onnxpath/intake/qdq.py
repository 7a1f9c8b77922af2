"""QDQ node groups written as the integer ops ONNX Runtime runs them as.

A QDQ model (quantize_static with QuantFormat.QDQ) stores a quantized Conv as
DequantizeLinear(x) and DequantizeLinear(W) into a float Conv, then QuantizeLinear. ONNX Runtime
does not run it that way: its graph optimizer fuses the group into one QLinearConv (likewise
MatMul into QLinearMatMul and Gemm into QGemm), which accumulates integers exactly and rounds
once. Run as float ops, the group would round differently at a few elements per layer, and
those one-step differences grow through a deep network (measured: 0.11 on EfficientNet-Lite0's
logits). So before the float rewrite (quantized.py) such groups become the QOperator op
ONNX Runtime runs, and the rewrite reproduces its integers exactly.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MS = "com.microsoft"
FUSED = {"Conv": "QLinearConv", "MatMul": "QLinearMatMul", "Gemm": "QGemm"}
EIGHT_BIT = (TensorProto.INT8, TensorProto.UINT8)


def qdq_as_qoperator(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with each DequantizeLinear → Conv/MatMul/Gemm → QuantizeLinear group whose
    weights are constant integers written as one QLinearConv, QLinearMatMul or QGemm (in
    place; the DequantizeLinear nodes stay for any other reader)."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    constants = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    fused, dropped = {}, set()
    for node in graph.node:
        if node.op_type not in FUSED or node.domain not in ("", "ai.onnx"):
            continue
        group = _group(node, producer, readers, constants, outputs)
        if group is not None:
            fused[id(node)], quantize = group
            dropped.add(id(quantize))
    if not fused:
        return model
    nodes = [fused.get(id(n), n) for n in graph.node if id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(nodes)
    if any(n.domain == MS for n in nodes) and not any(o.domain == MS for o in
                                                        model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS, 1))
    return model


def _dq(name: str, producer: dict) -> list[str] | None:
    """(int tensor, scale, zero point) of a DequantizeLinear output, or None."""
    node = producer.get(name)
    if node is None or node.op_type != "DequantizeLinear":
        return None
    axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 1)
    inputs = list(node.input) + [""] * (3 - len(node.input))
    return [*inputs[:3], axis]


def _group(node, producer, readers, constants, outputs):
    """(the fused node, the QuantizeLinear it absorbs), or None when `node` is no QDQ group."""
    consumers = readers.get(node.output[0], [])
    if len(consumers) != 1 or consumers[0].op_type != "QuantizeLinear" or \
            node.output[0] in outputs or len(node.input) < 2:
        return None
    quantize = consumers[0]
    x, w = _dq(node.input[0], producer), _dq(node.input[1], producer)
    if x is None or w is None or w[0] not in constants or not w[2] or not x[2]:
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    weight = constants[w[0]]
    x_zp = constants.get(x[2])
    # ONNX Runtime fuses 8-bit groups only; 16-bit ones it runs as the float ops they are.
    if weight.data_type not in EIGHT_BIT or x_zp is None or x_zp.data_type not in EIGHT_BIT:
        return None
    bias = _bias(node, producer, constants, x, w)
    if bias is False or len(quantize.input) < 3 or not quantize.input[2]:
        return None
    y_scale, y_zp = quantize.input[1], quantize.input[2]
    out = quantize.output[0]
    name = (node.name or node.output[0]) + "/fused"
    if node.op_type == "Conv":
        if w[3] != 0 and _size(constants.get(w[1])) > 1:
            return None
        inputs = [*x[:3], *w[:3], y_scale, y_zp] + ([bias] if bias else [])
        return helper.make_node("QLinearConv", inputs, [out], name=name, **attrs), quantize
    if node.op_type == "MatMul":
        if bias or (_size(constants.get(w[1])) > 1 and w[3] not in (-1, len(weight.dims) - 1)):
            return None
        return helper.make_node("QLinearMatMul", [*x[:3], *w[:3], y_scale, y_zp], [out],
                                name=name), quantize
    if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or \
            attrs.get("transA", 0):
        return None
    per_output = 0 if attrs.get("transB", 0) else 1  # the axis of the weights' N
    if _size(constants.get(w[1])) > 1 and w[3] != per_output:
        return None
    inputs = [*x[:3], *w[:3], bias or "", y_scale, y_zp]
    return helper.make_node("QGemm", inputs, [out], name=name, domain=MS,
                            transB=attrs.get("transB", 0)), quantize


def _bias(node, producer, constants, x, w):
    """The int32 bias a fused op reads (scale x_scale·w_scale, zero point 0); None when the
    node has no bias, False when its bias is not of that form."""
    if len(node.input) < 3 or not node.input[2]:
        return None
    b = _dq(node.input[2], producer)
    if b is None or b[0] not in constants or constants[b[0]].data_type != TensorProto.INT32:
        return False
    scales = [constants.get(n) for n in (b[1], x[1], w[1])]
    if any(s is None for s in scales):
        return False
    bias_scale, x_scale, w_scale = (numpy_helper.to_array(s).astype(np.float64)
                                    for s in scales)
    if not np.allclose(bias_scale, x_scale * w_scale, rtol=1e-5, atol=0):
        return False
    zero = constants.get(b[2]) if b[2] else None
    if zero is not None and np.any(numpy_helper.to_array(zero)):
        return False
    return b[0]


def _size(tensor) -> int:
    return 1 if tensor is None else int(np.prod(tensor.dims)) if tensor.dims else 1
