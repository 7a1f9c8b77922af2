"""ONNX Runtime's activation and bias fusions (com.microsoft) as standard ops (see
intake/unfuse.py):
- Gelu → x·0.5·(1 + Erf(x/√2)); BiasGelu → Add, then the same;
- FastGelu → x·0.5·(1 + Tanh(√(2/π)·(x + 0.044715·x³))), after an Add of its optional bias;
- QuickGelu → x·Sigmoid(α·x) (α = 1.702 unless given);
- BiasAdd → X + bias + skip;
- GemmFastGelu → FastGelu(X·W + bias) (the transformers optimizer's enable_gemm_fast_gelu; its
  kernels are CUDA/ROCm ones).
"""

from __future__ import annotations

import math

import onnx

from onnxpath.intake.unfuse_writer import Nodes, Writer, attrs_of, given

ACTIVATIONS = ("Gelu", "BiasGelu", "FastGelu", "QuickGelu", "BiasAdd", "GemmFastGelu")


def _gelu(n: Nodes, x: str, fast: bool, out: str) -> None:
    if fast:
        cube = n.op("Mul", n.op("Mul", x, x), x)
        inner = n.op("Add", x, n.op("Mul", cube, n.const(0.044715)))
        core = n.op("Tanh", n.op("Mul", inner, n.const(math.sqrt(2 / math.pi))))
    else:
        core = n.op("Erf", n.op("Div", x, n.const(math.sqrt(2))))
    one_plus = n.op("Add", core, n.const(1.0))
    n.op("Mul", n.op("Mul", x, n.const(0.5)), one_plus, out=out)


def unfuse_activation(w: Writer, node: onnx.NodeProto) -> list[onnx.NodeProto]:
    n = Nodes(w, node)
    x, out = node.input[0], node.output[0]
    if node.op_type == "BiasAdd":
        n.op("Add", n.op("Add", x, node.input[1]), node.input[2], out=out)
        return n.nodes
    if node.op_type == "QuickGelu":
        alpha = attrs_of(node).get("alpha", 1.702)
        n.op("Mul", x, n.op("Sigmoid", n.op("Mul", x, n.const(alpha))), out=out)
        return n.nodes
    bias = given(node, 1)
    if node.op_type == "GemmFastGelu":
        x, bias = n.op("MatMul", x, node.input[1]), given(node, 2)
    if bias:  # BiasGelu, or FastGelu with its bias
        x = n.op("Add", x, bias)
    _gelu(n, x, node.op_type in ("FastGelu", "GemmFastGelu"), out)
    return n.nodes
