"""Old opsets raised to the one onnxpath differentiates without changing what the model computes.

onnx's version converter changes an op's version, not always its meaning. What it misses:
- PRelu before opset 7 takes a slope of shape (C,) per channel (axis 1) of an N×C×… input;
  from opset 7 the slope broadcasts numpy-style, from the last axis. The slope is reshaped to
  C×1×…×1 first.
- Elementwise ops before opset 7 broadcast with `broadcast=1` and `axis` (B's dims aligned at
  `axis` of A); the converter's adapter writes an untyped tensor for it. A constant B is
  reshaped so numpy broadcasting aligns it the same way, and the attributes are dropped.
- Upsample (opsets 7-9) and Resize-10 become Resize-11+, whose default coordinates
  (half_pixel) are not theirs (asymmetric; nearest rounds down): the converted Resize gets
  the old modes.

After the upgrade, `check_forward_equal` runs both models in ONNX Runtime (where it runs the
old one, opsets 7 and up) on the same input and refuses a model whose outputs moved.
"""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from onnxpath.errors import ModelError

LEGACY_BROADCAST = ("Add", "Sub", "Mul", "Div", "Pow", "And", "Or", "Xor", "Equal",
                    "Greater", "Less")
CHECKED_BELOW = 11  # opsets whose upgrade crosses a change of meaning checked at run time
CHECK_LIMIT = 64 * 2 ** 20  # bytes: larger models are not run twice


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    try:
        inferred = shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001  without inference the rank stays unknown
        inferred = model
    values = [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
    return {v.name: len(v.type.tensor_type.shape.dim) for v in values
            if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")}


def _reshape_initializer(model: onnx.ModelProto, name: str, shape: list[int]) -> bool:
    """Give a constant another shape (a copy when other nodes read it too)."""
    found = next((i for i in model.graph.initializer if i.name == name), None)
    if found is None:
        return False
    array = numpy_helper.to_array(found).reshape(shape)
    found.CopyFrom(numpy_helper.from_array(array, name))
    return True


def _readers(model: onnx.ModelProto, name: str) -> int:
    return sum(i == name for n in model.graph.node for i in n.input)


def legacy_semantics(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """Rewrite, at the model's own opset, what the version converter would change (see the
    module docstring). In place; returns the model."""
    if opset >= 7:
        return model
    ranks = _ranks(model)
    constants = {i.name: list(i.dims) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "PRelu" and len(node.input) > 1:
            slope, rank = node.input[1], ranks.get(node.input[0])
            dims = constants.get(slope)
            if dims is not None and len(dims) == 1 and dims[0] > 1 and rank and rank > 2 \
                    and _readers(model, slope) == 1:
                _reshape_initializer(model, slope, [dims[0], *[1] * (rank - 2)])
        elif node.op_type in LEGACY_BROADCAST:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if not attrs.get("broadcast"):
                continue
            b, rank = node.input[1], ranks.get(node.input[0])
            dims = constants.get(b)
            if dims is None or rank is None or _readers(model, b) != 1:
                continue
            axis = attrs.get("axis", rank - len(dims))
            axis = axis + rank if axis < 0 else axis
            _reshape_initializer(model, b, [*dims, *[1] * (rank - axis - len(dims))])
            kept = [a for a in node.attribute if a.name not in ("broadcast", "axis")]
            del node.attribute[:]
            node.attribute.extend(kept)
    return model


def resize_as_upsample(model: onnx.ModelProto, old: int) -> onnx.ModelProto:
    """Give each Resize the converter made from an Upsample (or a Resize-10) the coordinates of
    opsets below 11: asymmetric, nearest rounding down. Opsets below 11 have no other Resize;
    the converter renames tensors, so these are told apart by the attribute opset 11 added.
    In place; returns the model."""
    if old >= 11:
        return model
    for node in model.graph.node:
        if node.op_type != "Resize" or any(a.name == "coordinate_transformation_mode"
                                           for a in node.attribute):
            continue
        mode = next((helper.get_attribute_value(a) for a in node.attribute
                     if a.name == "mode"), b"nearest")
        node.attribute.append(helper.make_attribute("coordinate_transformation_mode",
                                                    "asymmetric"))
        if mode in (b"nearest", "nearest") and not any(a.name == "nearest_mode"
                                                       for a in node.attribute):
            node.attribute.append(helper.make_attribute("nearest_mode", "floor"))
    return model


def _example_feeds(model: onnx.ModelProto) -> dict[str, np.ndarray] | None:
    initializers = {i.name for i in model.graph.initializer}
    rng = np.random.default_rng(0)
    feeds = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        t = value.type.tensor_type
        if t.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
            return None  # token ids, masks: no input made up here is sure to be valid
        shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
                 for d in t.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(t.elem_type)
        feeds[value.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def _outputs(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray] | None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        session = ort.InferenceSession(model.SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        return session.run(None, feeds)
    except Exception:  # noqa: BLE001  ONNX Runtime does not run this opset: nothing to check
        return None


def check_forward_equal(before: onnx.ModelProto, after: onnx.ModelProto, old: int,
                        new: int) -> None:
    """Refuse an upgrade that changed the outputs, where ONNX Runtime runs both models on the
    same made-up input (see CHECKED_BELOW, CHECK_LIMIT)."""
    if old >= CHECKED_BELOW or before.ByteSize() > CHECK_LIMIT:
        return
    key = hashlib.sha256(before.SerializeToString() + after.SerializeToString()).hexdigest()
    if key in _CHECKED:  # the Explainer normalises a model more than once
        return
    _compare(before, after, old, new)
    _CHECKED.add(key)


_CHECKED: set[str] = set()  # models whose upgrade was found forward-equal in this process


def _compare(before: onnx.ModelProto, after: onnx.ModelProto, old: int, new: int) -> None:
    feeds = _example_feeds(before)
    if not feeds:
        return
    expected = _outputs(before, feeds)
    if expected is None:
        return
    got = _outputs(after, feeds)
    if got is None:
        raise ModelError(f"the model upgraded from opset {old} to {new} no longer runs in "
                         "ONNX Runtime")
    for a, b in zip(expected, got, strict=True):
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype.kind != "f":
            continue
        scale = max(float(np.abs(a).max(initial=0.0)), 1.0)
        if a.shape != b.shape or not np.allclose(a, b, rtol=1e-4, atol=1e-5 * scale,
                                                 equal_nan=True):
            gap = float(np.abs(a - b).max()) if a.shape == b.shape else f"shape {b.shape}"
            raise ModelError(f"upgrading the model from opset {old} to {new} changes its "
                             f"outputs (largest gap {gap}); onnxpath refuses to explain a "
                             "different function")
