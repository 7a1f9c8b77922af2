"""Where a model is not smooth: which side of each kink every element is on, so that a finite
difference can tell whether its step crossed one.

A central difference (f(x + hv) − f(x − hv)) / 2h of a piecewise-linear model (ReLU, ReLU6 as
Clip, max-pooling) is exact when no kink lies between x − hv and x + hv: f is linear on that
segment. Crossing kinks adds an error that no gradient rule is to blame for. `watch` adds to a
model, as extra outputs, the tensors that decide each piecewise op's branch (a Relu's input, a
Clip's input and bounds, a MaxPool's argmax indices, an ArgMax's output...); `Kink.code` turns
them into one integer per element that changes exactly when the element changes branch.

Watched: the ReLU family (Relu, Clip, LeakyRelu, PRelu; `autodiff.relu_family`), Abs, Sign, Elu,
HardSigmoid, HardSwish, Max, Min, MaxPool (its Indices output), GlobalMaxPool, ReduceMax,
ReduceMin, Floor, Ceil, Round, and every integer or boolean tensor computed from the input values
(ArgMax, comparisons feeding Where, Cast to an integer): a step that changes one of those is a
jump or a switch of branch too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxpath.autodiff.relu_family import RELU_FAMILY, graph_constants
from onnxpath.autodiff.walk import FLOAT_TYPES, value_infos

PREFIX = "onnxpath_kink"
SIGN_OPS = {*RELU_FAMILY, "Abs", "Sign", "Elu"} - {"Clip"}
VALUE_OPS = ("Floor", "Ceil", "Round")  # their output values jump
SHAPE_ONLY = ("Shape", "Size")  # outputs that do not depend on the values they read


@dataclass
class Kink:
    """One piecewise node: `tensors` are fetched; `code(arrays)` gives the branch of every
    element (equal codes: same branch)."""

    node: str
    op_type: str
    tensors: list[str]
    code: Callable[[Sequence[np.ndarray]], np.ndarray]


def sides(x: np.ndarray, *kinks) -> np.ndarray:
    """Which side of each kink (below, at, above) every element of x is on, as one integer."""
    code = np.zeros(np.shape(x), np.uint8)
    for j, k in enumerate(kinks):  # one base-3 digit per kink: 0, 1, 2 for below, at, above
        if k is not None:
            for side in (np.greater(x, k), np.greater_equal(x, k)):
                code += side.view(np.uint8) if j == 0 else side.view(np.uint8) * np.uint8(3 ** j)
    return code


def value_reach(graph: onnx.GraphProto, wrt: str) -> set[str]:
    """Tensors whose values depend on the values of `wrt` (shapes alone do not count)."""
    reached = {wrt}
    for node in graph.node:
        if node.op_type not in SHAPE_ONLY and any(i in reached for i in node.input if i):
            reached.update(o for o in node.output if o)
    return reached


def needed_by(graph: onnx.GraphProto, of: str) -> set[str]:
    needed = {of}
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            needed.update(i for i in node.input if i)
    return needed


def watch(model: onnx.ModelProto, wrt: str, of: str) -> tuple[onnx.ModelProto, list[Kink]]:
    """A copy of `model` (whose output is `of`) that also outputs what decides the branch of
    every piecewise node between `wrt` and `of`, and those nodes."""
    model_copy = onnx.ModelProto()
    model_copy.CopyFrom(model)
    graph = model_copy.graph
    reach, needed = value_reach(graph, wrt), needed_by(graph, of)
    infos = value_infos(model_copy)
    constants = graph_constants(graph)
    found: list[Kink] = []
    for index, node in enumerate(graph.node):
        if node.domain not in ("", "ai.onnx") or node.op_type in SHAPE_ONLY \
                or not any(i in reach for i in node.input if i) \
                or not any(o in needed for o in node.output if o):
            continue
        name = node.name or node.output[0]
        kink = _kink(node, f"{PREFIX}/{index}", constants, infos)
        if kink is not None:
            kink.node = name
            found.append(kink)
        # Integer and boolean results (ArgMax, Greater feeding Where, Cast to int): their
        # values are branches themselves.
        for out in node.output:
            if out and out in needed and infos.get(out, (onnx.TensorProto.FLOAT,))[0] \
                    not in FLOAT_TYPES:
                found.append(Kink(name, node.op_type, [out], lambda a: a[0]))
    known = {o.name for o in graph.output}
    for kink in found:
        for tensor in kink.tensors:
            if tensor not in known:
                known.add(tensor)
                elem = onnx.TensorProto.INT64 if tensor.startswith(PREFIX) \
                    else infos.get(tensor, (onnx.TensorProto.FLOAT,))[0]  # MaxPool's Indices
                graph.output.append(helper.make_tensor_value_info(tensor, elem, None))
    return model_copy, found


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _kink(node: onnx.NodeProto, fresh: str, constants, infos) -> Kink | None:
    op, attrs, x = node.op_type, _attrs(node), node.input[0]
    if op in SIGN_OPS:
        return Kink("", op, [x], lambda a: sides(a[0], 0.0))
    if op == "Clip":
        if "min" in attrs or "max" in attrs:  # before opset 11
            lo, hi = attrs.get("min"), attrs.get("max")
            return Kink("", op, [x], lambda a: sides(a[0], lo, hi))
        # Constant bounds (ReLU6's 0 and 6) are read here; computed ones are fetched.
        names = [node.input[k] if len(node.input) > k and node.input[k] else None
                 for k in (1, 2)]
        fixed = [numpy_helper.to_array(constants[n]) if n in constants else None
                 for n in names]
        fetched = [n for n, v in zip(names, fixed, strict=True) if n and v is None]

        def clip_code(a):
            rest = iter(a[1:])
            lo, hi = (v if v is not None or n is None else next(rest)
                      for n, v in zip(names, fixed, strict=True))
            return sides(a[0], lo, hi)
        return Kink("", op, [x, *fetched], clip_code)
    if op in ("HardSigmoid", "HardSwish"):
        alpha, beta = (attrs.get("alpha", 0.2), attrs.get("beta", 0.5)) if op == "HardSigmoid" \
            else (1 / 6, 0.5)
        return Kink("", op, [x], lambda a: sides(alpha * a[0] + beta, 0.0, 1.0))
    if op in VALUE_OPS:
        return Kink("", op, [node.output[0]], lambda a: a[0])
    if op in ("Max", "Min"):
        pick = np.argmax if op == "Max" else np.argmin
        return Kink("", op, [i for i in node.input if i],
                    lambda a: pick(np.stack(np.broadcast_arrays(*a)), axis=0).astype(np.int16))
    if op == "MaxPool":
        if len(node.output) < 2 or not node.output[1]:
            while len(node.output) < 2:
                node.output.append("")
            node.output[1] = f"{fresh}/indices"
        return Kink("", op, [node.output[1]], lambda a: a[0])
    if op == "GlobalMaxPool":
        return Kink("", op, [x], lambda a: a[0].reshape(*a[0].shape[:2], -1).argmax(-1))
    if op in ("ReduceMax", "ReduceMin"):
        return _reduce_kink(node, attrs, constants, infos)
    return None


def _reduce_kink(node, attrs, constants, infos) -> Kink:
    """Which elements equal the reduced value: the ones the gradient flows to."""
    axes = attrs.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1] in constants:
        axes = numpy_helper.to_array(constants[node.input[1]]).tolist()
    keep = attrs.get("keepdims", 1)

    def code(a):
        x, y = a
        if not keep:
            rank = x.ndim
            kept = sorted(k % rank for k in axes) if axes else list(range(rank))
            y = np.expand_dims(y, kept)
        return (x == y).astype(np.int8)
    return Kink("", node.op_type, [node.input[0], node.output[0]], code)


def switched(kinks: Sequence[Kink], base: Sequence[np.ndarray],
             *points: Sequence[np.ndarray]) -> tuple[int, int]:
    """(elements, nodes) whose branch at any of `points` differs from `base` (the codes at x)."""
    elements = nodes = 0
    for k in range(len(kinks)):
        differs = np.zeros(np.shape(base[k]), bool)
        for codes in points:
            if np.shape(codes[k]) != np.shape(base[k]):
                differs = np.ones(np.shape(base[k]), bool)
                break
            differs |= codes[k] != base[k]
        count = int(differs.sum())
        elements += count
        nodes += count > 0
    return elements, nodes


def codes(kinks: Sequence[Kink], values: dict[str, np.ndarray]) -> list[np.ndarray]:
    return [np.asarray(k.code([values[t] for t in k.tensors])) for k in kinks]
