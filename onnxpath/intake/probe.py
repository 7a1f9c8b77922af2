"""Exact shapes from one ONNX Runtime run, where static shape inference leaves dims unknown.

Static inference gives up on many graphs that run fine: shapes computed through Shape ->
Gather -> Concat -> Reshape chains it cannot follow, Resize with computed sizes, Slice with
computed ends, ops of the ai.onnx.ml domain. The real shapes are known the moment the model
runs once. So the model runs once on inputs of the actual shape, with every tensor whose
shape is unknown as an extra output, and the shapes read back are written into the graph's
value_info. Shape ops then fold into constants (fold.py), and a Slice, Gather or Resize
"along a dynamic axis" is a static one.

With a dynamic batch the model runs at two batch sizes: a dim that changes with the batch
stays symbolic (the batch name when it equals the batch), so one engine keeps serving every
batch size. The values fed are zeros for integers (valid token ids and indices) and a fixed
uniform pattern for floats: only shapes are read, and only shapes that do not depend on the
values (see `value_shaped`) are kept.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from ..autodiff.walk import value_infos

# Ops whose output shape depends on the values they read, not only on shapes.
VALUE_SHAPED = {"NonZero", "Unique", "Compress", "NonMaxSuppression", "Loop", "Scan", "If",
                "TopK", "Range", "ConstantOfShape", "Reshape", "Expand", "Tile", "Slice", "Pad",
                "Resize", "Upsample", "OneHot", "Squeeze", "Unsqueeze", "Split",
                "CenterCropPad", "StringSplit", "RandomNormal", "RandomUniform"}
SHAPE_ONLY = ("Shape", "Size")


def unknown(shape) -> bool:
    return shape is None or any(not isinstance(d, int) for d in shape[1:])


def needed_by(model: onnx.ModelProto, tensor: str) -> list[str]:
    """Tensors `tensor` depends on, in graph order (node outputs only)."""
    needed = {tensor}
    for node in reversed(model.graph.node):
        if any(o in needed for o in node.output):
            needed.update(i for i in node.input if i)
    return [o for n in model.graph.node for o in n.output if o in needed]


def data_dependent(model: onnx.ModelProto) -> set[str]:
    """Tensors whose values depend on the inputs' values (not only on their shapes)."""
    reached = {i.name for i in model.graph.input}
    for node in model.graph.node:
        if node.op_type in SHAPE_ONLY:
            continue
        if any(i in reached for i in node.input):
            reached.update(node.output)
    return reached


def value_shaped(model: onnx.ModelProto) -> set[str]:
    """Tensors whose shape may depend on the inputs' values: the output of a VALUE_SHAPED op
    that reads a data-dependent tensor, and everything computed from one."""
    values = data_dependent(model)
    shaped: set[str] = set()
    for node in model.graph.node:
        inputs = [i for i in node.input if i]
        if any(i in shaped for i in inputs) or (
                node.op_type in VALUE_SHAPED and any(i in values for i in inputs[1:])) or (
                node.op_type in ("NonZero", "Unique", "Compress", "NonMaxSuppression", "Loop",
                                 "Scan", "If") and any(i in values for i in inputs)):
            shaped.update(node.output)
    return shaped


def to_probe(model: onnx.ModelProto, tensor: str, infos: dict) -> list[str]:
    """The tensors `tensor` depends on whose shapes static inference left unknown."""
    wobbly = value_shaped(model)
    return [name for name in needed_by(model, tensor)
            if name in infos and infos[name][0] and unknown(infos[name][1])
            and name not in wobbly] + \
        ([tensor] if tensor not in infos or infos[tensor][0] == 0 else [])


def feed_for(value: onnx.ValueInfoProto, shape: tuple[int, ...]) -> np.ndarray:
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type))
    if dtype.kind == "f":
        rng = np.random.default_rng(0)
        return rng.random(shape).astype(dtype)
    return np.zeros(shape, dtype)


def run_shapes(model: onnx.ModelProto, names: list[str], infos: dict,
               shapes: dict[str, tuple[int, ...]], folder=None) -> dict[str, tuple]:
    """{tensor: its shape} from one run on inputs of `shapes` (by input name)."""
    from ..runtime import make_session

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    for name in names:
        elem = infos.get(name, (onnx.TensorProto.FLOAT,))[0] or onnx.TensorProto.FLOAT
        probe.graph.output.append(helper.make_tensor_value_info(name, elem, None))
    session = make_session(probe, "cpu", 1, folder)
    initializers = {i.name for i in model.graph.initializer}
    feeds = {i.name: feed_for(i, shapes[i.name]) for i in model.graph.input
             if i.name not in initializers and i.name in shapes}
    quiet = ort.RunOptions()
    quiet.log_severity_level = 4  # a failed probe is not the user's error: no ORT log line
    values = session.run(names, feeds, quiet)
    return {name: tuple(np.shape(v)) for name, v in zip(names, values, strict=True)}


def probe_shapes(model: onnx.ModelProto, tensor: str, shapes: dict[str, tuple[int, ...]],
                 dynamic_batch: bool, folder=None) -> dict[str, list]:
    """{tensor: dims (ints, or "N" for the batch, or None)} for every tensor `tensor` needs
    whose shape static inference left unknown; empty when none is."""
    infos = value_infos(model)
    names = to_probe(model, tensor, infos)
    if not names:
        return {}
    try:
        first = run_shapes(model, names, infos, shapes, folder)
        if not dynamic_batch:
            return {name: list(shape) for name, shape in first.items()}
        batch = next(iter(shapes.values()))[0]
        other = {k: (batch + 1, *v[1:]) for k, v in shapes.items()}
        second = run_shapes(model, names, infos, other, folder)
    except Exception:  # noqa: BLE001  the model refuses these made-up values (e.g. token
        # positions past its table): static inference is all there is, and the real run
        # reports a real input's problem in its own words.
        return {}
    result = {}
    for name, a in first.items():
        b = second[name]
        if len(a) != len(b):
            continue  # the rank changes with the batch: leave it to static inference
        result[name] = [d if d == e else "N" if (d, e) == (batch, batch + 1) else None
                        for d, e in zip(a, b, strict=True)]
    return result


def apply_shapes(model: onnx.ModelProto, found: dict[str, list], infos: dict) -> None:
    """Write the probed shapes into the graph's value_info (replacing what was there)."""
    graph = model.graph
    kept = [v for v in graph.value_info if v.name not in found]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    outputs = {o.name: o for o in graph.output}
    for name, dims in found.items():
        elem = infos.get(name, (onnx.TensorProto.FLOAT,))[0] or onnx.TensorProto.FLOAT
        value = helper.make_tensor_value_info(name, elem, dims)
        if name in outputs:
            outputs[name].CopyFrom(value)
        else:
            graph.value_info.append(value)
