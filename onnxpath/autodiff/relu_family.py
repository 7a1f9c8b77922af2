"""The ReLU family: the piecewise-linear activations that switch a neuron off at zero.

Relu, LeakyRelu, PRelu, and Clip with a lower bound of 0 (ReLU6 as torch, tf2onnx and
paddle2onnx all export it; ReLU when no upper bound is given). These are the default pathway
layers, and the activations whose backward rule guided backprop and deconvnet swap. A Clip with
another lower bound (hardtanh) is piecewise linear too, but has no "off" state at zero.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import numpy_helper

RELU_FAMILY = ("Relu", "Clip", "LeakyRelu", "PRelu")


def clip_is_relu_like(lower: np.ndarray | float | None) -> bool:
    """Whether a Clip's lower bound (attribute before opset 11, constant input after; None
    when absent or computed at run time) makes it ReLU-like."""
    if lower is None:
        return False
    value = np.asarray(lower)
    return value.size == 1 and float(value.reshape(())) == 0.0


def is_relu_family(op_type: str, attrs: dict, input_value: Callable[[int], object]) -> bool:
    """`attrs` are the node's decoded attributes; `input_value(i)` is the constant value of
    its i-th input, or None."""
    if op_type != "Clip":
        return op_type in RELU_FAMILY
    lower = attrs.get("min") if "min" in attrs else input_value(1)
    return clip_is_relu_like(lower)


def graph_constants(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    """Initializers and Constant node values by tensor name (not decoded)."""
    found = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            found[node.output[0]] = node.attribute[0].t
    return found


def node_is_relu_family(node: onnx.NodeProto, constants: dict[str, onnx.TensorProto]) -> bool:
    """`is_relu_family` for a node of a graph whose `graph_constants` are given."""
    if node.domain not in ("", "ai.onnx"):
        return False
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

    def value(i: int):
        name = node.input[i] if i < len(node.input) else ""
        return numpy_helper.to_array(constants[name]) if name in constants else None

    return is_relu_family(node.op_type, attrs, value)
