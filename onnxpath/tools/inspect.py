"""What onnxpath sees in a model, before any run: inputs, logits, preprocessing, activation
layers and their neuron counts, and the ops on the differentiated path that lack a rule.

Only the graph is read; weights in external data files stay on disk. Neuron counts need
concrete shapes, so dynamic dims take the batch 1, `size`, the preset's size, or 224.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from onnxpath.autodiff import missing_rules
from onnxpath.autodiff.relu_family import RELU_FAMILY, graph_constants, node_is_relu_family
from onnxpath.autodiff.walk import value_infos
from onnxpath.errors import ModelError
from onnxpath.intake.model import (
    Intake,
    data_inputs,
    declared_shape,
    load_model,
    normalise,
    opset_of,
)
from onnxpath.io.preprocess import PRESETS, preset_for
from onnxpath.ort.external import external_files, numel

ACTIVATION_OPS = ("Relu", "LeakyRelu", "PRelu", "Clip", "Elu", "Selu", "Celu", "Gelu",
                  "HardSwish", "HardSigmoid", "Sigmoid", "Tanh", "Softplus", "Softsign", "Mish",
                  "ThresholdedRelu", "Swish")
DEFAULT_SIZE = 224


def dtype_name(elem_type: int) -> str:
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).name
    except (KeyError, TypeError, ValueError):
        return onnx.TensorProto.DataType.Name(elem_type).lower()


def describe(value: onnx.ValueInfoProto) -> dict:
    return {"name": value.name, "shape": list(declared_shape(value)),
            "dtype": dtype_name(value.type.tensor_type.elem_type)}


def concrete_shape(declared: tuple, size: tuple[int, int] | None) -> tuple[int, ...]:
    """The declared input shape with its dynamic dims filled: batch 1, spatial `size`."""
    spatial = iter(size or (DEFAULT_SIZE, DEFAULT_SIZE))
    dims = []
    for i, d in enumerate(declared):
        if isinstance(d, int) and d > 0:
            dims.append(d)
        elif i == 0:
            dims.append(1)
        elif i == 1 and len(declared) == 4 and declared[3] not in (1, 3):
            dims.append(3)  # NCHW with dynamic channels: assume RGB
        else:
            dims.append(next(spatial, DEFAULT_SIZE))
    return tuple(dims)


def preset_name(prep) -> str:
    return next((name for name, p in PRESETS.items() if p == prep), "model metadata")


def needed_by(model: onnx.ModelProto, tensor: str) -> set[str]:
    needed = {tensor}
    for node in reversed(model.graph.node):
        if any(o in needed for o in node.output):
            needed.update(i for i in node.input if i)
    return needed


def activation_layers(model: onnx.ModelProto, logits: str, infos: dict,
                      layers: tuple[str, ...]) -> list[dict]:
    needed = needed_by(model, logits)
    constants = graph_constants(model.graph)
    found = []
    for node in model.graph.node:
        if node.op_type not in ACTIVATION_OPS or node.output[0] not in needed:
            continue
        shape = infos.get(node.output[0], (0, None))[1]
        per_example = list(shape[1:]) if shape else None
        known = per_example is not None and all(isinstance(d, int) for d in per_example)
        found.append({"name": node.name or node.output[0], "op_type": node.op_type,
                      "output": node.output[0], "shape": per_example,
                      "neurons": int(np.prod(per_example)) if known else None,
                      "relu_family": node_is_relu_family(node, constants),
                      "selected": node.op_type in layers and (
                          node.op_type != "Clip" or node_is_relu_family(node, constants))})
    return found


def inspect_model(path: str | os.PathLike, size: tuple[int, int] | None = None,
                  layers: tuple[str, ...] = RELU_FAMILY,
                  keep_probabilities: bool = False, output: str | None = None,
                  wrt: str | None = None) -> dict:
    """A JSON-ready report. Raises ModelError only when the file is not a readable model;
    anything onnxpath cannot do with a readable one is listed under `problems`."""
    path = Path(path)
    proto = load_model(path)
    ops = Counter(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
                  for n in proto.graph.node)
    report: dict = {
        "model": str(path),
        "producer": " ".join(filter(None, [proto.producer_name, proto.producer_version])),
        "ir_version": proto.ir_version, "opset": opset_of(proto),
        "opsets": {o.domain or "ai.onnx": o.version for o in proto.opset_import},
        "nodes": len(proto.graph.node), "ops": dict(sorted(ops.items())),
        "parameters": sum(numel(t) for t in proto.graph.initializer),
        "external_data": external_files(proto),
        "inputs": [describe(v) for v in data_inputs(proto)],
        "outputs": [describe(v) for v in proto.graph.output],
        "analysed_shape": None, "output": None, "wrt": None, "logits": None,
        "preprocess": None, "activations": [],
        "layers": list(layers), "neurons": None, "neurons_all": None, "unsupported": [],
        "problems": [],
    }
    inputs = data_inputs(proto)
    if not inputs:
        report["problems"].append("the model has no inputs")
        return report
    primary = next((i for i in inputs if i.name == wrt), inputs[0])
    declared = declared_shape(primary)
    prep = preset_for(declared, proto)
    report["preprocess"] = {"preset": preset_name(prep), **asdict(prep)}
    shape = concrete_shape(declared, size or prep.size)
    report["analysed_shape"] = list(shape)
    shapes = {i.name: concrete_shape(declared_shape(i), size or prep.size) for i in inputs
              if i.name != primary.name}
    try:
        info = normalise(proto, shape, keep_probabilities, Intake(output, wrt), shapes)
        infos = value_infos(info.proto)
    except (ModelError, onnx.shape_inference.InferenceError) as err:
        report["problems"].append(str(err).splitlines()[0])
        return report
    logits_shape = infos.get(info.logits, (0, None))[1]
    report["output"] = {"name": info.output, "reason": info.output_reason, "kind": info.kind}
    report["wrt"] = {"tensor": info.input_name, "reason": info.wrt_reason,
                     "context": list(info.context)}
    report["logits"] = {
        "tensor": info.logits, "output": info.output, "shape": list(logits_shape or []) or None,
        "ends_in_softmax": info.softmax is not None, "softmax_node": info.softmax,
        "differentiates_probabilities": keep_probabilities and info.softmax is not None}
    report["activations"] = activation_layers(info.proto, info.logits, infos, tuple(layers))
    counts = [a["neurons"] for a in report["activations"]]
    report["neurons_all"] = sum(counts) if None not in counts else None
    selected = [a["neurons"] for a in report["activations"] if a["selected"]]
    report["neurons"] = sum(selected) if None not in selected else None
    report["unsupported"] = [{"op_type": op, "node": name} for op, name in
                             missing_rules(info.proto, info.logits, [info.input_name])]
    return report
