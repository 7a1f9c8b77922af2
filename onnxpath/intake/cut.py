"""The tensor attributions are taken with respect to (`wrt`), and the inputs a model needs.

A float input is attributed as it is. An integer input (uint8 pixels cast and normalised in
the graph, int64 token ids) cannot carry a gradient: the attribution is then taken with
respect to the first float tensor computed from it (the Cast output; the embedding lookup),
or any tensor `--wrt` names. The canonical model takes that tensor as a graph input, and a
small prefix model computes it from the user's inputs.

Inputs other than the explained one are context: given in an `.npz` by name, or defaulted
(documented in the README): a name with "mask" gets ones shaped like the explained input, one
with "type" or "segment" zeros, one with "position" 0..T-1 along its last axis.
"""

from __future__ import annotations

import re

import numpy as np
import onnx
from onnx import helper

from onnxpath.autodiff.walk import FLOAT_TYPES, prune_unused, value_infos
from onnxpath.errors import InputError, ModelError

SHAPE_ONLY = ("Shape", "Size")  # their outputs do not depend on the values they read
MASK, ZEROS, POSITIONS = (re.compile(p, re.IGNORECASE)
                          for p in (r"mask", r"type|segment", r"position"))


def is_float(model_or_infos, name: str) -> bool:
    infos = model_or_infos if isinstance(model_or_infos, dict) else value_infos(model_or_infos)
    return infos.get(name, (0,))[0] in FLOAT_TYPES


def first_float_tensor(model: onnx.ModelProto, source: str, target: str,
                       infos: dict) -> str | None:
    """The first float tensor, in graph order, computed from `source`'s values (not merely
    its shape) that the `target` depends on."""
    needed = {target}
    for node in reversed(model.graph.node):
        if any(o in needed for o in node.output):
            needed.update(i for i in node.input if i)
    reached = {source}
    for node in model.graph.node:
        if node.op_type in SHAPE_ONLY or not any(i in reached for i in node.input):
            continue
        for out in node.output:
            if out and infos.get(out, (0,))[0] in FLOAT_TYPES and out in needed:
                return out
            reached.add(out)
    return None


def cut_at(model: onnx.ModelProto, wrt: str, infos: dict) -> onnx.ModelProto:
    """A copy of `model` in which `wrt` is a graph input (batch dim symbolic) and the nodes
    that only served to compute it are gone. Inputs no node reads any more are dropped."""
    if wrt in {i.name for i in model.graph.input}:
        return model
    if wrt not in infos:
        raise ModelError(f"--wrt {wrt}: the model has no tensor of that name")
    elem, shape = infos[wrt]
    if elem not in FLOAT_TYPES:
        raise ModelError(f"--wrt {wrt}: it is {onnx.TensorProto.DataType.Name(elem).lower()}, "
                         "not a float tensor; gradients need a float tensor")
    cut = onnx.ModelProto()
    cut.CopyFrom(model)
    graph = cut.graph
    for node in graph.node:
        for k, out in enumerate(node.output):
            if out == wrt:
                node.output[k] = f"{wrt}/onnxpath_cut"
    dims = list(shape) if shape is not None else None
    if dims:
        dims[0] = "N"
    graph.input.append(helper.make_tensor_value_info(wrt, elem, dims))
    cut = prune_unused(cut)
    drop_unused_inputs(cut)
    return cut


def drop_unused_inputs(model: onnx.ModelProto) -> None:
    read = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    kept = [i for i in model.graph.input if i.name in read]
    del model.graph.input[:]
    model.graph.input.extend(kept)


def prefix_model(model: onnx.ModelProto, wrt: str, infos: dict) -> onnx.ModelProto:
    """The part of `model` that computes `wrt` from the model's inputs, `wrt` its output."""
    prefix = onnx.ModelProto()
    prefix.CopyFrom(model)
    del prefix.graph.output[:]
    elem, shape = infos[wrt]
    prefix.graph.output.append(helper.make_tensor_value_info(wrt, elem, shape))
    prefix = prune_unused(prefix)
    drop_unused_inputs(prefix)
    return prefix


def default_input(name: str, like: np.ndarray, value: onnx.ValueInfoProto) -> np.ndarray:
    """The documented default for an input not given (see the module docstring)."""
    dtype = helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
    rank = len(value.type.tensor_type.shape.dim)
    shape = like.shape[:rank] if rank <= like.ndim else None
    if shape is None:
        raise InputError(f"the model input '{name}' was not given and its shape cannot be "
                         f"derived; give it in an .npz with one array per input name")
    if MASK.search(name):
        return np.ones(shape, dtype)
    if POSITIONS.search(name):
        return np.broadcast_to(np.arange(shape[-1], dtype=dtype), shape).copy()
    if ZEROS.search(name):
        return np.zeros(shape, dtype)
    raise InputError(f"the model input '{name}' was not given and has no default; give it in "
                     "an .npz with one array per input name")
