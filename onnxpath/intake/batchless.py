"""Models without a batch dim: a rank-1 (or scalar) input, or a first dim that is not a batch.

onnxpath runs everything on batches (N×...), so such a model gets one: each data input gains a
leading dim of 1 that a Squeeze takes off again, each tensor output a leading 1 from an
Unsqueeze. The function is unchanged; the model then has a fixed batch of 1, which the engine
runs one row at a time (engine/fixed_batch.py). A user's example may be written with or
without that leading 1 (a `.npy` of shape (4,) or (1, 4) for an input declared (4,)).

Whether the first dim is a batch: a rank-1 or scalar input has none; a fixed first dim of a
rank ≥ 2 input is not a batch when no output starts with the same dim (a model that reduces
over it, e.g. (3, 4) -> (4,)), or when its rows mix: changing row 0 of the input changes other
rows of the output (a Softmax over dim 0; `rows_interact`). A symbolic first dim is always
taken for a batch, and so is a fixed one whose rows are independent (a fixed batch N).
"""

from __future__ import annotations

import onnx
from onnx import helper, shape_inference

UNBATCHED = "/onnxpath_unbatched"


def data_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def _dims(value: onnx.ValueInfoProto) -> list | None:
    t = value.type
    if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in t.tensor_type.shape.dim]


def output_dims(model: onnx.ModelProto) -> list[list | None]:
    """The tensor outputs' dims (None: unknown), inferred where the graph does not say."""
    declared = [_dims(o) for o in model.graph.output]
    if all(d is not None for d in declared):
        return declared
    try:
        inferred = shape_inference.infer_shapes(model).graph.output
    except Exception:  # noqa: BLE001  inference is a hint here; without it nothing is changed
        return declared
    return [d if d is not None else _dims(o) for d, o in zip(declared, inferred, strict=True)]


def has_no_batch(model: onnx.ModelProto) -> bool:
    """Whether the first data input has no batch dim (see the module docstring)."""
    inputs = data_inputs(model)
    if not inputs:
        return False
    dims = _dims(inputs[0])
    if dims is None:
        return False
    if len(dims) <= 1:
        return True
    first = dims[0]
    if first is None:
        return False
    outs = [d for d in output_dims(model) if d is not None]
    if not outs:
        return False
    # An output's unknown or symbolic first dim may well be the batch: then it is one.
    if all(len(d) == 0 or (d[0] is not None and d[0] != first) for d in outs):
        return True
    return first > 1 and rows_interact(model, inputs[0].name, first)


CHECK_LIMIT = 64 * 2 ** 20  # bytes: larger models are not run to test their batch dim


def rows_interact(model: onnx.ModelProto, name: str, rows: int) -> bool:
    """Whether changing row 0 of input `name` changes other rows of an output that starts
    with the same dim: then dim 0 mixes its rows (Softmax over it, a matrix product along it)
    and is not a batch. One ONNX Runtime run of two inputs; a model it cannot run, or an
    input it cannot make up (integers), keeps its dim 0 as the batch."""
    if model.ByteSize() > CHECK_LIMIT:
        return False
    import numpy as np
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    feeds = {}
    for value in data_inputs(model):
        t = value.type.tensor_type
        if t.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
            return False
        dims = _dims(value) or []
        shape = [d or 1 for d in dims]
        feeds[value.name] = rng.standard_normal(shape).astype(
            helper.tensor_dtype_to_np_dtype(t.elem_type))
    changed = dict(feeds)
    changed[name] = feeds[name].copy()
    changed[name][0] += 1.0
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        session = ort.InferenceSession(model.SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        before, after = session.run(None, feeds), session.run(None, changed)
    except Exception:  # noqa: BLE001  not runnable as it is: dim 0 stays the batch
        return False
    for a, b in zip(before, after, strict=True):
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype.kind != "f" or a.ndim == 0 or len(a) != rows or a.shape != b.shape:
            continue
        if not np.allclose(a[1:], b[1:], rtol=1e-5, atol=1e-6, equal_nan=True):
            return True
    return False


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _axis_node(model: onnx.ModelProto, op: str, source: str, target: str) -> list:
    """Squeeze or Unsqueeze of axis 0, in the form the model's opset takes."""
    name = f"{target}/onnxpath_{op.lower()}"
    if _opset(model) < 13:
        return [helper.make_node(op, [source], [target], axes=[0], name=name)]
    axes = f"{name}/axes"
    const = helper.make_node("Constant", [], [axes], name=f"{axes}/node",
                             value=helper.make_tensor(axes, onnx.TensorProto.INT64, [1], [0]))
    return [const, helper.make_node(op, [source, axes], [target], name=name)]


def with_batch_axis(model: onnx.ModelProto) -> tuple[onnx.ModelProto, bool]:
    """(the model with a leading batch dim of 1 on its data inputs and tensor outputs, True),
    or (the model unchanged, False) when its input has a batch dim already."""
    if not has_no_batch(model):
        return model, False
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    renamed = {}
    front, back = [], []
    for value in data_inputs(result):
        inner = value.name + UNBATCHED
        renamed[value.name] = inner
        front += _axis_node(result, "Squeeze", value.name, inner)
        _prepend_one(value)
    for value in graph.output:
        if not value.type.HasField("tensor_type") or value.name in renamed:
            continue
        inner = value.name + UNBATCHED
        renamed[value.name] = inner
        back += _axis_node(result, "Unsqueeze", inner, value.name)
        if value.type.tensor_type.HasField("shape"):
            _prepend_one(value)
    for node in graph.node:
        node.input[:] = [renamed.get(i, i) for i in node.input]
        node.output[:] = [renamed.get(o, o) for o in node.output]
    for value in graph.value_info:
        value.name = renamed.get(value.name, value.name)
    nodes = [*front, *graph.node, *back]
    del graph.node[:]
    graph.node.extend(nodes)
    return result, True


def _prepend_one(value: onnx.ValueInfoProto) -> None:
    shape = value.type.tensor_type.shape
    dims = [onnx.TensorShapeProto.Dimension() for _ in range(len(shape.dim) + 1)]
    dims[0].dim_value = 1
    for new, old in zip(dims[1:], shape.dim, strict=True):
        new.CopyFrom(old)
    del shape.dim[:]
    shape.dim.extend(dims)
