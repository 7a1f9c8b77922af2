"""bfloat16 models, run the way ONNX Runtime's CPU provider runs float16 ones.

ONNX Runtime's CPU provider (1.32) has no bfloat16 kernel for arithmetic: Add, Mul, MatMul,
Gemm, Conv, Relu, Sigmoid, Softmax, the Reduce family, LayerNormalization, Pad, Resize, Where,
Expand, Tile, Equal... all fail to load ("Could not find an implementation"), and numpy's
bfloat16 (ml_dtypes) cannot be fed to a session. For float16 the provider inserts Casts and
computes in float32 (its InsertCastTransformer); for bfloat16 it does not. So a bfloat16 model
is rewritten here to do what the provider does for float16: every weight exactly as stored
(bfloat16 -> float32 is exact), the arithmetic in float32, float32 at the ends. The model's
function differs from a bfloat16 accelerator's only by the rounding of its activations.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from onnxpath.errors import ModelError

BF16 = TensorProto.BFLOAT16
F32 = TensorProto.FLOAT
# Attributes that name an element type (Cast's `to`, EyeLike/Random*'s `dtype`).
TYPE_ATTRIBUTES = ("to", "dtype")


def uses_bfloat16(model: onnx.ModelProto) -> bool:
    graph = model.graph
    return any(i.data_type == BF16 for i in graph.initializer) or \
        any(v.type.tensor_type.elem_type == BF16 for v in
            [*graph.input, *graph.output, *graph.value_info]) or \
        any(_names_bfloat16(n) for n in graph.node)


def _names_bfloat16(node: onnx.NodeProto) -> bool:
    for a in node.attribute:
        if a.name in TYPE_ATTRIBUTES and a.type == onnx.AttributeProto.INT and a.i == BF16:
            return True
        if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == BF16:
            return True
    return False


def _widened(tensor: onnx.TensorProto) -> onnx.TensorProto:
    return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32),
                                   tensor.name)


def bfloat16_as_float32(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` unchanged when it has no bfloat16, else a float32 copy (see the module doc)."""
    if not uses_bfloat16(model):
        return model
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    for i, init in enumerate(graph.initializer):
        if init.data_type == BF16:
            if init.data_location == TensorProto.EXTERNAL:
                raise ModelError(f"bfloat16 weight '{init.name}' is kept in external data; "
                                 "ONNX Runtime's CPU provider cannot run bfloat16: convert "
                                 "the model to float32 or float16")
            graph.initializer[i].CopyFrom(_widened(init))
    for node in graph.node:
        for a in node.attribute:
            if a.name in TYPE_ATTRIBUTES and a.type == onnx.AttributeProto.INT and a.i == BF16:
                a.i = F32
            elif a.type == onnx.AttributeProto.TENSOR and a.t.data_type == BF16:
                a.t.CopyFrom(_widened(a.t))
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.type.tensor_type.elem_type == BF16:
            value.type.tensor_type.elem_type = F32
    return result
