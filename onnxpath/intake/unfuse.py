"""ONNX Runtime's fused contrib ops rewritten as standard ONNX ops.

A model saved by ONNX Runtime's optimizer (`SessionOptions.optimized_model_filepath`, level
ORT_ENABLE_EXTENDED) holds com.microsoft ops no gradient rule knows, and a FusedConv with
activation "Relu" hides that Relu from the pathway method. `unfuse` undoes the fusions:
- FusedConv → Conv (+ Add of the optional 4th input Z) + the activation node;
- FusedGemm → Gemm + the activation node;
- Gelu → x·0.5·(1 + Erf(x/√2)); BiasGelu → Add, then the same;
- FastGelu → x·0.5·(1 + Tanh(√(2/π)·(x + 0.044715·x³))), after an Add of its optional bias.
Other contrib ops are left as they are (the gradient walk refuses them in one line).
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MS = "com.microsoft"
FUSED = ("FusedConv", "FusedGemm", "Gelu", "BiasGelu", "FastGelu")
# Activations FusedConv carries, with the names of its activation_params in order.
CONV_PARAMS = {"Relu": (), "Tanh": (), "Sigmoid": (), "LeakyRelu": ("alpha",),
               "HardSigmoid": ("alpha", "beta"), "Clip": ("min", "max")}
# FusedGemm writes an activation's attributes as activation_<name>.
GEMM_ACTIVATIONS = ("Relu", "Tanh", "Sigmoid", "LeakyRelu", "HardSigmoid", "Elu", "Selu",
                    "Softsign", "ThresholdedRelu")


def _fused(node: onnx.NodeProto) -> bool:
    return node.domain == MS and node.op_type in FUSED


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


class _Writer:
    """New nodes and constants with names unused in the model."""

    def __init__(self, model: onnx.ModelProto, elem_types: dict[str, int]):
        graph = model.graph
        self.taken = {n for node in graph.node for n in (*node.input, *node.output)}
        self.taken |= {t.name for t in graph.initializer}
        self.taken |= {v.name for v in (*graph.input, *graph.output, *graph.value_info)}
        self.taken |= {n.name for n in graph.node}
        self.elem_types = elem_types
        self.opset = _opset(model)
        self.initializers: list[onnx.TensorProto] = []

    def name(self, base: str) -> str:
        name, i = base, 0
        while name in self.taken:
            i += 1
            name = f"{base}_{i}"
        self.taken.add(name)
        return name

    def const(self, base: str, value: float, elem: int) -> str:
        dtype = helper.tensor_dtype_to_np_dtype(elem)
        name = self.name(base)
        self.initializers.append(numpy_helper.from_array(np.array(value, dtype=dtype), name))
        return name

    def elem(self, node: onnx.NodeProto) -> int:
        for tensor in (node.output[0], node.input[0]):
            if tensor in self.elem_types:
                return self.elem_types[tensor]
        return TensorProto.FLOAT


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _activation(w: _Writer, op: str, x: str, y: str, params: dict, elem: int,
                prefix: str) -> list[onnx.NodeProto]:
    """The node(s) y = op(x) with `params` as the op's attributes (Clip's as inputs)."""
    name = w.name(f"{prefix}/{op}")
    if op == "Clip":
        low = params.get("min", -np.finfo(np.float32).max)
        high = params.get("max", np.finfo(np.float32).max)
        if w.opset < 11:
            return [helper.make_node("Clip", [x], [y], name=name, min=float(low),
                                     max=float(high))]
        inputs = [x, w.const(f"{prefix}/clip_min", low, elem),
                  w.const(f"{prefix}/clip_max", high, elem)]
        return [helper.make_node("Clip", inputs, [y], name=name)]
    return [helper.make_node(op, [x], [y], name=name,
                             **{k: float(v) for k, v in params.items()})]


def _fused_conv(w: _Writer, node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
    attrs = _attrs(node)
    act = attrs.pop("activation", b"")
    act = act.decode() if isinstance(act, bytes) else str(act)
    values = list(attrs.pop("activation_params", []))
    if act and act not in CONV_PARAMS:
        return None
    prefix = node.name or node.output[0]
    elem = w.elem(node)
    inputs = list(node.input[:3])
    while inputs and not inputs[-1]:
        inputs.pop()
    z = node.input[3] if len(node.input) > 3 and node.input[3] else None
    out = node.output[0]
    conv_out = w.name(f"{prefix}/conv_out") if (act or z) else out
    nodes = [helper.make_node("Conv", inputs, [conv_out], name=w.name(f"{prefix}/Conv"),
                              **attrs)]
    if z:
        summed = w.name(f"{prefix}/sum_out") if act else out
        nodes.append(helper.make_node("Add", [conv_out, z], [summed],
                                      name=w.name(f"{prefix}/Add")))
        conv_out = summed
    if act:
        params = dict(zip(CONV_PARAMS[act], values, strict=False))
        nodes += _activation(w, act, conv_out, out, params, elem, prefix)
    return nodes


def _fused_gemm(w: _Writer, node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
    attrs = _attrs(node)
    act = attrs.pop("activation", b"")
    act = act.decode() if isinstance(act, bytes) else str(act)
    params = {}
    for key in list(attrs):
        if key.startswith("activation_"):
            params[key[len("activation_"):]] = attrs.pop(key)
        elif key == "leaky_relu_alpha":
            params["alpha"] = attrs.pop(key)
    if act and act not in GEMM_ACTIVATIONS:
        return None
    allowed = {"LeakyRelu": ("alpha",), "HardSigmoid": ("alpha", "beta"), "Elu": ("alpha",),
               "Selu": ("alpha", "gamma"), "ThresholdedRelu": ("alpha",)}.get(act, ())
    params = {k: v for k, v in params.items() if k in allowed}
    prefix = node.name or node.output[0]
    out = node.output[0]
    gemm_out = w.name(f"{prefix}/gemm_out") if act else out
    nodes = [helper.make_node("Gemm", list(node.input), [gemm_out],
                              name=w.name(f"{prefix}/Gemm"), **attrs)]
    if act:
        nodes += _activation(w, act, gemm_out, out, params, w.elem(node), prefix)
    return nodes


def _gelu(w: _Writer, node: onnx.NodeProto) -> list[onnx.NodeProto]:
    prefix = node.name or node.output[0]
    elem = w.elem(node)
    out = node.output[0]
    nodes = []
    x = node.input[0]
    bias = node.input[1] if len(node.input) > 1 and node.input[1] else None
    if bias:  # BiasGelu, or FastGelu with its bias
        biased = w.name(f"{prefix}/biased")
        nodes.append(helper.make_node("Add", [x, bias], [biased], name=w.name(f"{prefix}/Add")))
        x = biased

    def op(kind: str, inputs: list[str], output: str | None = None) -> str:
        output = output or w.name(f"{prefix}/{kind.lower()}_out")
        nodes.append(helper.make_node(kind, inputs, [output], name=w.name(f"{prefix}/{kind}")))
        return output

    if node.op_type == "FastGelu":
        cube = op("Mul", [op("Mul", [x, x]), x])
        inner = op("Add", [x, op("Mul", [cube, w.const(f"{prefix}/c", 0.044715, elem)])])
        core = op("Tanh", [op("Mul", [inner, w.const(f"{prefix}/k",
                                                            math.sqrt(2 / math.pi), elem)])])
    else:
        core = op("Erf", [op("Div", [x, w.const(f"{prefix}/sqrt2", math.sqrt(2), elem)])])
    one_plus = op("Add", [core, w.const(f"{prefix}/one", 1.0, elem)])
    half_x = op("Mul", [x, w.const(f"{prefix}/half", 0.5, elem)])
    op("Mul", [half_x, one_plus], out)
    return nodes


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    graph = model.graph
    types = {v.name: v.type.tensor_type.elem_type
             for v in (*graph.input, *graph.output, *graph.value_info)
             if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type}
    types.update({t.name: t.data_type for t in graph.initializer})
    return types


def unfuse(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` with FusedConv, FusedGemm, Gelu, BiasGelu and FastGelu
    (com.microsoft) rewritten as standard ONNX ops; `model` itself when it has none. Output
    names are kept, so value_info stays valid; the new intermediate tensors get theirs from
    shape inference."""
    if not any(_fused(n) for n in model.graph.node):
        return model
    model = onnx.ModelProto.FromString(model.SerializeToString())
    w = _Writer(model, _elem_types(model))
    rewritten: list[onnx.NodeProto] = []
    for node in model.graph.node:
        new = None
        if _fused(node):
            if node.op_type == "FusedConv":
                new = _fused_conv(w, node)
            elif node.op_type == "FusedGemm":
                new = _fused_gemm(w, node)
            else:
                new = _gelu(w, node)
        rewritten.extend(new if new is not None else [node])
    del model.graph.node[:]
    model.graph.node.extend(rewritten)
    model.graph.initializer.extend(w.initializers)
    if not any(n.domain == MS for n in model.graph.node):
        kept = [o for o in model.opset_import if o.domain != MS]
        del model.opset_import[:]
        model.opset_import.extend(kept)
    # Inference is a courtesy here: normalise's own shape handling follows.
    with contextlib.suppress(Exception):
        model = onnx.shape_inference.infer_shapes(model)
    return model
