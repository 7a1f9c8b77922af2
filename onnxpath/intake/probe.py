"""Exact shapes from one ONNX Runtime run, where static shape inference leaves dims unknown.

Static inference gives up on many graphs that run fine: shapes computed through Shape ->
Gather -> Concat -> Reshape chains it cannot follow, Resize with computed sizes, Slice with
computed ends, ops of the ai.onnx.ml domain. The real shapes are known the moment the model
runs once. So the model runs once on inputs of the actual shape, with the Shape of every
tensor whose shape is unknown as an extra output (the activations themselves are not kept),
and the shapes read back are written into the graph's value_info. Shape-derived values that
gradient rules need as constants (Slice bounds, Pad pads, Resize sizes) are read in the same
run and become constants. Shape ops then fold into constants (fold.py), and a Slice, Gather
or Resize "along a dynamic axis" is a static one.

With a dynamic batch the model runs at two batch sizes: a dim that changes with the batch
stays symbolic (the batch name when it equals the batch), so one engine keeps serving every
batch size. Node-by-node inference at those shapes (concrete.py) usually answers everything
first, and the model runs only for what it leaves. The values fed are zeros for integers
(valid token ids and indices) and a fixed uniform pattern for floats: only shapes are read,
and only shapes that do not depend on the values (see `value_shaped`) are kept.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from onnxpath.autodiff.walk import value_infos
from onnxpath.intake.concrete import Concrete

# Ops whose output shape depends on the values they read, not only on shapes.
VALUE_SHAPED = {"NonZero", "Unique", "Compress", "NonMaxSuppression", "Loop", "Scan", "If",
                "TopK", "Range", "ConstantOfShape", "Reshape", "Expand", "Tile", "Slice", "Pad",
                "Resize", "Upsample", "OneHot", "Squeeze", "Unsqueeze", "Split",
                "CenterCropPad", "StringSplit", "RandomNormal", "RandomUniform"}
SHAPE_ONLY = ("Shape", "Size")
# Inputs that gradient rules read as constants, by op.
CONSTANT_INPUTS = {"Slice": (1, 2, 3, 4), "Pad": (1, 2, 3), "Resize": (1, 2, 3),
                   "Upsample": (1,), "Tile": (1,), "Split": (1,), "Squeeze": (1,),
                   "Unsqueeze": (1,), "ReduceSum": (1,), "ReduceMean": (1,), "ReduceMax": (1,),
                   "ReduceMin": (1,), "ReduceProd": (1,), "ReduceL2": (1,), "TopK": (1,),
                   "CenterCropPad": (1,)}
SMALL = 4096  # elements: shape arithmetic is far below this


def unknown(shape, batch: str | None = None) -> bool:
    """Whether static inference left a dim unknown: any dim after the first that is not a
    number, or a first dim named other than the input's batch (a Resize then cannot tell
    'N' from 'unk__66')."""
    if shape is None:
        return True
    first = shape[0] if shape else 0
    return any(not isinstance(d, int) for d in shape[1:]) or (
        not isinstance(first, int) and first != batch)


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


def to_probe(model: onnx.ModelProto, tensor: str, infos: dict,
             batch: str | None = None) -> list[str]:
    """The tensors `tensor` depends on whose shapes static inference left unknown."""
    wobbly = value_shaped(model)
    return [name for name in needed_by(model, tensor)
            if name in infos and infos[name][0] and unknown(infos[name][1], batch)
            and name not in wobbly] + \
        ([tensor] if tensor not in infos or infos[tensor][0] == 0 else [])


def constants_of(model: onnx.ModelProto) -> set[str]:
    return {i.name for i in model.graph.initializer} | {
        n.output[0] for n in model.graph.node if n.op_type == "Constant"}


def values_to_fold(model: onnx.ModelProto, tensor: str) -> list[str]:
    """Inputs that gradient rules need as constants (Slice bounds, Pad pads, Resize sizes,
    ...) of nodes `tensor` depends on, computed at run time from shapes alone."""
    needed = set(needed_by(model, tensor))
    data, constants = data_dependent(model), constants_of(model)
    found = []
    for node in model.graph.node:
        if not any(o in needed for o in node.output):
            continue
        for k in CONSTANT_INPUTS.get(node.op_type, ()):
            name = node.input[k] if k < len(node.input) else ""
            if name and name not in constants and name not in data and name not in found:
                found.append(name)
    return found


def feed_for(value: onnx.ValueInfoProto, shape: tuple[int, ...]) -> np.ndarray:
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type))
    if dtype.kind == "f":
        rng = np.random.default_rng(0)
        return rng.random(shape).astype(dtype)
    return np.zeros(shape, dtype)


SHAPE_OF = "/onnxpath_probe_shape"


def probe_session(model: onnx.ModelProto, shaped: list[str], valued: list[str], infos: dict,
                  folder=None):
    """A session over `model` whose outputs are the shapes of `shaped` (Shape nodes, so no
    activation is kept alive) and the values of `valued` (small shape arithmetic)."""
    from onnxpath.ort.sessions import make_session

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    # Each Shape right after the node that makes its tensor: ORT runs nodes in graph order, and
    # Shapes appended at the end kept every probed activation alive until then (a ViT's 135
    # probed tensors: 0.4 GB for a 0.1 GB model).
    wanted = set(shaped)
    nodes = [helper.make_node("Shape", [name], [name + SHAPE_OF], name=name + SHAPE_OF)
             for name in shaped if name in {i.name for i in model.graph.input}]
    for node in probe.graph.node:
        nodes.append(node)
        nodes.extend(helper.make_node("Shape", [out], [out + SHAPE_OF], name=out + SHAPE_OF)
                     for out in node.output if out in wanted)
    placed = {n.input[0] for n in nodes if n.op_type == "Shape" and
              n.output[0].endswith(SHAPE_OF)}
    nodes.extend(helper.make_node("Shape", [name], [name + SHAPE_OF], name=name + SHAPE_OF)
                 for name in shaped if name not in placed)
    del probe.graph.node[:]
    probe.graph.node.extend(nodes)
    for name in shaped:
        probe.graph.output.append(helper.make_tensor_value_info(
            name + SHAPE_OF, onnx.TensorProto.INT64, None))
    for name in valued:
        elem = infos.get(name, (onnx.TensorProto.FLOAT,))[0] or onnx.TensorProto.FLOAT
        probe.graph.output.append(helper.make_tensor_value_info(name, elem, None))
    return make_session(probe, "cpu", 1, folder, once=True)


def run_probe(session, model: onnx.ModelProto, shaped: list[str], valued: list[str],
              shapes: dict[str, tuple[int, ...]]) -> tuple[dict, dict]:
    """({tensor: shape}, {tensor: value}) from one run on inputs of `shapes` (by name)."""
    initializers = {i.name for i in model.graph.initializer}
    feeds = {i.name: feed_for(i, shapes[i.name]) for i in model.graph.input
             if i.name not in initializers and i.name in shapes}
    quiet = ort.RunOptions()
    quiet.log_severity_level = 4  # a failed probe is not the user's error: no ORT log line
    names = [n + SHAPE_OF for n in shaped] + valued
    results = session.run(names, feeds, quiet)
    found = [tuple(int(d) for d in r) for r in results[:len(shaped)]]
    return dict(zip(shaped, found, strict=True)), dict(zip(valued, results[len(shaped):],
                                                           strict=True))


def probe(model: onnx.ModelProto, tensor: str, shapes: dict[str, tuple[int, ...]],
          batch: str | None, folder=None) -> dict:
    """{"shapes": {tensor: dims (ints, `batch` for the batch, or None)}, "values": {tensor:
    [dtype, shape, flat values]}} for what `tensor` needs and static inference left unknown:
    shapes, and the shape-derived values rules need as constants. Empty when nothing is.
    Node-by-node inference at the actual shapes (concrete.py) answers first; ONNX Runtime runs
    the model only for what it leaves."""
    infos = value_infos(model)
    names = to_probe(model, tensor, infos, batch)
    folds = [n for n in values_to_fold(model, tensor) if n not in names]
    if not names and not folds:
        return {}
    size = next(iter(shapes.values()))[0]
    other = {k: (size + 1, *v[1:]) for k, v in shapes.items()}
    static = [concrete(model, shapes)]
    static.append(concrete(model, other) if batch is not None else static[0])
    known = [c.shapes for c in static]
    inferred = [n for n in names if all(n in k for k in known)]
    evaluated = [n for n in folds if all(n in c.values for c in static)]
    found = combine(((known[0], static[0].values), (known[1], static[1].values)), inferred,
                    evaluated, infos, size, batch)
    names = [n for n in names if n not in inferred]
    folds = [n for n in folds if n not in evaluated]
    if not names and not folds:
        return found
    try:
        session = probe_session(model, names, folds, infos, folder)
        first = run_probe(session, model, names, folds, shapes)
        second = first if batch is None else run_probe(session, model, names, folds, other)
    except Exception:  # noqa: BLE001  the model refuses these made-up values (e.g. token
        # positions past its table): static inference is all there is, and the real run
        # reports a real input's problem in its own words.
        return found
    ran = combine((first, second), names, folds, infos, size, batch)
    return {part: {**found[part], **ran[part]} for part in ("shapes", "values")}


def concrete(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]):
    """Node-by-node inference at `shapes`, or nothing known when it fails: the run then
    answers everything, as it did before."""
    try:
        return Concrete(model, shapes)
    except Exception:  # noqa: BLE001  a graph this pass cannot read is the probe run's
        return Nothing()


class Nothing:
    shapes: dict = {}
    values: dict = {}


def combine(runs, names: list[str], folds: list[str], infos: dict, size: int,
            batch: str | None) -> dict:
    """What two sightings ((shapes, values) at batch `size` and `size` + 1) agree on: a dim
    that grew with the batch is the batch, one that changed otherwise is unknown; a value is
    kept only when it is small and did not change."""
    (shapes_a, values_a), (shapes_b, values_b) = runs
    found: dict = {"shapes": {}, "values": {}}
    for name in names:
        a, b = shapes_a[name], shapes_b[name]
        if len(a) != len(b):
            continue  # the rank changes with the batch: leave it to static inference
        dims = [d if d == e else batch if (d, e) == (size, size + 1) else None
                for d, e in zip(a, b, strict=True)]
        found["shapes"][name] = [infos.get(name, (0,))[0] or onnx.TensorProto.FLOAT, dims]
    for name in folds:
        a, b = np.asarray(values_a[name]), np.asarray(values_b[name])
        if a.size <= SMALL and a.shape == b.shape and np.array_equal(a, b):
            found["values"][name] = [a.dtype.str, list(a.shape), a.ravel().tolist()]
    return found


def fold_values(model: onnx.ModelProto, values: dict) -> None:
    """Make each probed value a Constant (its producer's output renamed away; pruned later
    when nothing else reads it)."""
    if not values:
        return
    graph = model.graph
    for node in graph.node:
        for k, out in enumerate(node.output):
            if out in values:
                node.output[k] = f"{out}/onnxpath_probed"
    made = []
    for name, (dtype, shape, flat) in values.items():
        array = np.asarray(flat, dtype=np.dtype(dtype)).reshape(shape)
        made.append(helper.make_node("Constant", [], [name], name=f"{name}/onnxpath_constant",
                                     value=onnx.numpy_helper.from_array(array, name)))
    nodes = [*made, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)


def apply_shapes(model: onnx.ModelProto, found: dict[str, list]) -> None:
    """Write the probed shapes ({tensor: [element type, dims]}) into the graph's value_info,
    replacing what was there."""
    graph = model.graph
    kept = [v for v in graph.value_info if v.name not in found]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    outputs = {o.name: o for o in graph.output}
    for name, (elem, dims) in found.items():
        value = helper.make_tensor_value_info(name, elem, dims)
        if name in outputs:
            outputs[name].CopyFrom(value)
        else:
            graph.value_info.append(value)
