"""Quantization ops that stay in the graph after intake (intake/quantized.py rewrites the
others onto float shadows, where the straight-through estimate is built from standard ops).

DynamicQuantizeLinear computes its scale and zero point from x (min and max). Straight-through
estimation treats quantization parameters as constants: inside the range the dequantized
value is x whatever the scale (Bengio et al. 2013; Jacob et al. 2018), so nothing flows back
through them. Its integer output carries no adjoint.
"""

from __future__ import annotations

from onnxpath.autodiff.builder import GraphBuilder, Node
from onnxpath.autodiff.rules import rule


@rule("DynamicQuantizeLinear")
def dynamic_quantize_linear(node: Node, dy, b: GraphBuilder):
    return [None]
