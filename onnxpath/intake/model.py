"""Load an ONNX model and put it in the one shape the rest of onnxpath differentiates.

Normalisation: initializers dropped from the inputs of IR < 4 models, opset raised to at least
OPSET_FLOOR, auto_pad made explicit, dynamic dims other than the batch fixed from the actual
input, and the pre-softmax logits located. Weights in external data files stay on disk.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, version_converter

from onnxpath.autodiff.rules.conv import window_geometry
from onnxpath.autodiff.walk import FLOAT_TYPES, value_infos
from onnxpath.errors import ModelError
from onnxpath.intake import cut, heads, legacy, probe
from onnxpath.intake.fold import fold_shape_arithmetic
from onnxpath.intake.quantized import quantized_as_float
from onnxpath.intake.unfuse import unfuse
from onnxpath.ort.external import check_locations, has_external_data, load_small_tensors
from onnxpath.ort.timing import timed
from onnxpath.ort.weights import detach

OPSET_FLOOR = 17
WINDOW_OPS = ("Conv", "MaxPool", "AveragePool", "LpPool")


@dataclass(frozen=True)
class Intake:
    """What the user chose about the model's ends (the CLI's --output, --wrt, --target-index,
    --region). `canonical` False keeps the first output as it is, whatever its shape, and the
    input as the differentiated tensor: the low-level form the op tests seed directly."""

    output: str | None = None  # the output (or float tensor) to explain; None: the default rule
    wrt: str | None = None  # the tensor to attribute; None: the input, or the first float one
    objective: str | None = None  # "elements": one column per output element; "region"
    region: tuple | None = None  # a region mask (nested tuples, hashable) for segmentation
    canonical: bool = True

    def key(self) -> tuple:
        return (self.output, self.wrt, self.objective, self.region, self.canonical)


@dataclass
class ModelInfo:
    """A normalised model and the names onnxpath needs from it."""

    proto: onnx.ModelProto
    input_name: str  # the float tensor attributions are taken with respect to (a graph input)
    input_shape: tuple  # the user's input as declared: ints, or names/None for dynamic dims
    logits: str  # the N×K tensor that attributions differentiate
    output: str  # the model output explained (probabilities when it ends in Softmax)
    path: Path | None = None
    raw_input: str | None = None  # the model input the user gives (None: input_name)
    prefix: onnx.ModelProto | None = None  # computes input_name from the model's inputs
    context: list[str] = field(default_factory=list)  # other inputs proto needs, by name
    kind: str = "classes"  # classes, regression, region or elements (see intake/heads.py)
    probabilities: bool = False  # the logits' values are probabilities themselves
    output_reason: str = ""
    wrt_reason: str = ""
    element_shape: tuple = ()  # one example's shape of the explained output
    softmax: str | None = None  # the Softmax node the output comes from (its name or output)
    uncut: onnx.ModelProto | None = None  # proto before input_name was made an input (export)
    differentiated: str = ""  # the model tensor whose elements are differentiated (records)

    @property
    def ends_in_softmax(self) -> bool:
        return self.logits != self.output

    @property
    def folder(self) -> Path | None:
        """Where external data files are resolved (the model file's folder)."""
        return self.path.parent if self.path is not None else None

    @property
    def wrt(self) -> str | None:
        """The attributed tensor when it is not the user's input itself (the JSON `wrt`)."""
        return None if self.raw_input in (None, self.input_name) else self.input_name


def load_model(path: str | os.PathLike, weights_folder: Path | None = None,
               private: bool = False) -> onnx.ModelProto:
    """Read a model from disk with one-line errors for bad files. Weights kept in external data
    files stay there (only small shape constants are read); their locations are checked.
    Inline weights move to a weights file in `weights_folder` (default: the cache folder's),
    the process's own and removed at exit where `private` (see ort/weights.py: detach)."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelError(f"model path is a directory, not an .onnx file: {path}")
    try:
        with timed("reading the model"):
            model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf raises several unrelated types for corrupt bytes
        raise ModelError(f"cannot read {path} as an ONNX model ({type(err).__name__}); "
                         "is the file complete and really .onnx?") from err
    if not model.graph.node:
        raise ModelError(f"{path} holds no graph nodes; is it really an ONNX model?")
    if has_external_data(model):
        check_locations(model, path.parent, path)
        try:
            load_small_tensors(model, path.parent)
        except Exception as err:
            raise ModelError(f"{path}: cannot read its external data ({err})".splitlines()[0]) \
                from err
    # The weights leave the protobuf once, here: every graph derived from it shares them.
    stat = path.stat()
    with timed("moving the weights to their file"):
        return detach(model, path.parent, (str(path.resolve()), stat.st_size, stat.st_mtime_ns),
                      weights_folder, private)


def data_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def declared_shape(value: onnx.ValueInfoProto) -> tuple:
    dims = value.type.tensor_type.shape.dim
    # Exporters write a dynamic batch as a name, as nothing, or as -1 or 0 (PaddlePaddle).
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0
                 else (d.dim_param or None) for d in dims)


def opset_of(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def drop_initializer_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """IR < 4 lists weights among the graph inputs; ONNX Runtime then cannot fold them."""
    kept = data_inputs(model)
    del model.graph.input[:]
    model.graph.input.extend(kept)
    return model


def upgrade_opset(model: onnx.ModelProto, floor: int = OPSET_FLOOR) -> onnx.ModelProto:
    old = opset_of(model)
    if old >= floor:
        return model
    # What the converter would change in meaning is rewritten first (intake/legacy.py).
    before = legacy.legacy_semantics(model, old)
    try:
        model = version_converter.convert_version(model, floor)
    except Exception as err:
        raise ModelError(f"cannot upgrade the model from opset {old} to {floor}: "
                         f"{err}".splitlines()[0]) from err
    model = legacy.resize_as_upsample(model, old)
    legacy.check_forward_equal(before, model, old, floor)
    return model


def fix_input_shape(model: onnx.ModelProto, shape: tuple[int, ...],
                    name: str | None = None) -> onnx.ModelProto:
    """Fix every dynamic dim but the batch of input `name` (default: the first) to the actual
    input's, so shapes infer statically."""
    inputs = data_inputs(model)
    value = next((i for i in inputs if i.name == name), inputs[0])
    dims = value.type.tensor_type.shape.dim
    if len(dims) != len(shape):
        raise ModelError(f"input '{value.name}' has rank {len(dims)}, the input has rank "
                         f"{len(shape)} {tuple(shape)}")
    for i, (dim, size) in enumerate(zip(dims, shape, strict=True)):
        if dim.HasField("dim_value") and dim.dim_value > 0:
            if dim.dim_value != size and i > 0:
                raise ModelError(f"input '{value.name}' expects shape {declared_shape(value)}, "
                                 f"got {tuple(shape)}")
        elif i > 0:
            dim.Clear()
            dim.dim_value = size
        elif not dim.dim_param:
            dim.Clear()
            dim.dim_param = "N"  # a batch of any size: one engine serves every batch size
    return model


def explicit_pads(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace auto_pad by the pads it stands for (needs static spatial shapes)."""
    infos = None
    for node in model.graph.node:
        if node.op_type not in WINDOW_OPS:
            continue
        attrs = {a.name: a for a in node.attribute}
        mode = helper.get_attribute_value(attrs["auto_pad"]).decode() \
            if "auto_pad" in attrs else "NOTSET"
        if mode == "NOTSET":
            continue
        infos = infos or value_infos(model)
        from onnxpath.autodiff.builder import Node
        view = Node.from_proto(node)
        x_shape = infos.get(node.input[0], (0, None))[1]
        if node.op_type == "Conv":
            kernel = list(infos.get(node.input[1], (0, (0, 0)))[1][2:])
        else:
            kernel = list(view.attr("kernel_shape"))
        if x_shape is None or not all(isinstance(d, int) for d in x_shape[2:]):
            continue  # left for the gradient rules, which resolve auto_pad themselves
        _, _, pads = window_geometry(view, list(x_shape[2:]), kernel)
        kept = [a for a in node.attribute if a.name not in ("auto_pad", "pads")]
        del node.attribute[:]
        node.attribute.extend([*kept, helper.make_attribute("pads", pads)])
    return model


def _primary(inputs: list, intake: Intake) -> onnx.ValueInfoProto:
    """The input the user's example is for: the one `--wrt` names, else the first."""
    return next((i for i in inputs if i.name == intake.wrt), inputs[0])


def normalise(model: onnx.ModelProto, input_shape: tuple[int, ...] | None = None,
              keep_probabilities: bool = False, intake: Intake | None = None,
              shapes: dict[str, tuple[int, ...]] | None = None,
              probe_memo: dict | None = None) -> ModelInfo:
    """Normalise `model` for differentiation. `input_shape` (the first input's actual shape)
    and `shapes` (other inputs' by name) resolve dynamic dims. With an `intake` (the
    Explainer's way) the model is made canonical: the chosen output as N×K logits, the
    attributed float tensor as its input (see `Intake`, intake/heads.py, intake/cut.py)."""
    model = unfuse(model)  # ONNX Runtime's fused contrib ops as standard ones
    inputs = data_inputs(model)
    if not inputs:
        raise ModelError("the model has no inputs to attribute to")
    plain = intake is None or not intake.canonical
    if plain and len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise ModelError(f"onnxpath explains models with one tensor input; this one has "
                         f"{len(inputs)} ({names})")
    intake = intake or Intake(canonical=False)
    primary = _primary(inputs, intake)
    declared = declared_shape(primary)
    model = drop_initializer_inputs(model)
    # Raise IR first: under IR < 4 the version converter takes initializers that are not graph
    # inputs for undefined tensors.
    if model.ir_version < 7:
        model.ir_version = 7
    model = upgrade_opset(model)
    model = quantized_as_float(model)  # integer ops on float shadows: straight-through
    actual = None
    if input_shape is not None:
        actual = {primary.name: tuple(input_shape)}
        model = fix_input_shape(model, tuple(input_shape), primary.name)
        for name, shape in (shapes or {}).items():
            if name != primary.name and name in {i.name for i in data_inputs(model)}:
                model = fix_input_shape(model, tuple(shape), name)
                actual[name] = tuple(shape)
        actual = at_fixed_batch(model, actual)
        model = fold_shape_arithmetic(model)
        model = explicit_pads(model)
    head = heads.choose_output(model, model.graph.output[0].name if plain else intake.output)
    head.explicit = head.explicit and not plain  # the low-level form keeps the logits rule
    tensor, probabilities = heads.differentiated_tensor(model, head, keep_probabilities)
    if actual is not None:
        model = shapes_from_a_run(model, tensor, actual, batch_name(model, primary.name),
                                  probe_memo)
    # The model's own tensor: the Softmax input when the logits replay the nodes after it.
    differentiated = head.softmax.input[0] if head.softmax is not None and \
        tensor not in (head.tensor, head.softmax.output[0]) else tensor
    if plain:
        info = ModelInfo(model, primary.name, declared, tensor, head.output,
                         probabilities=probabilities, softmax=softmax_name(head))
    else:
        info = _canonical(model, primary, declared, head, tensor, probabilities, intake)
    info.differentiated = differentiated
    return info


def at_fixed_batch(model: onnx.ModelProto, actual: dict[str, tuple]) -> dict[str, tuple]:
    """The shapes a probe runs at: an input whose batch dim is fixed (N > 1) runs at N, the
    size the engine feeds it (engine/fixed_batch.py), whatever rows the user gave."""
    fixed = {}
    for value in data_inputs(model):
        dims = value.type.tensor_type.shape.dim
        if value.name in actual and dims and dims[0].HasField("dim_value") \
                and dims[0].dim_value > 0:
            fixed[value.name] = (dims[0].dim_value, *actual[value.name][1:])
    return {**actual, **fixed}


def shapes_from_a_run(model: onnx.ModelProto, tensor: str, actual: dict[str, tuple],
                      batch: str | None, memo: dict | None = None) -> onnx.ModelProto:
    """Where static inference leaves dims unknown on the way to `tensor`, or rules would meet
    shape-derived values computed at run time, what one ONNX Runtime run says
    (intake/probe.py); shape arithmetic then folds again. `memo` keeps the result (the
    Explainer stores it on disk with its sessions)."""
    if memo is not None and "probe" in memo:
        found = memo["probe"]
    else:
        missing = [n for n in data_inputs(model) if n.name not in actual]
        if missing:  # an input without a shape to run at: static inference is all there is
            return model
        with timed("the intake probe (one ONNX Runtime run for shapes)"):
            found = probe.probe(model, tensor, actual, batch)
        if memo is not None:
            memo["probe"] = found
    if not found:
        return model
    probe.fold_values(model, found.get("values", {}))
    probe.apply_shapes(model, found.get("shapes", {}))
    return explicit_pads(fold_shape_arithmetic(model))


def _canonical(model: onnx.ModelProto, primary: onnx.ValueInfoProto, declared: tuple,
               head: heads.Head, tensor: str, probabilities: bool, intake: Intake) -> ModelInfo:
    """The chosen output as N×K logits, the attributed float tensor as the graph input."""
    infos = value_infos(model)
    elem, shape = infos.get(tensor, (onnx.TensorProto.FLOAT, None))
    region = None if intake.region is None else np.asarray(intake.region)
    logits, kind = heads.canonical_logits(model, tensor, shape, elem, intake.objective, region)
    wrt, wrt_reason = choose_wrt(model, primary, logits, intake, infos)
    info = ModelInfo(model, wrt, declared, logits, head.output, raw_input=primary.name,
                     kind=kind, probabilities=probabilities and kind == "classes",
                     output_reason=head.reason, wrt_reason=wrt_reason,
                     element_shape=tuple(shape[1:]) if shape else (),
                     softmax=softmax_name(head))
    if wrt != primary.name and wrt not in {i.name for i in model.graph.input}:
        info.prefix = cut.prefix_model(model, wrt, infos)
        info.proto = cut.cut_at(model, wrt, infos)
        info.uncut = model
    info.context = [i.name for i in data_inputs(info.proto) if i.name != wrt]
    return info


def batch_name(model: onnx.ModelProto, name: str) -> str | None:
    """The symbolic batch dim of input `name` after fix_input_shape (None: a fixed batch)."""
    value = next(i for i in model.graph.input if i.name == name)
    dims = value.type.tensor_type.shape.dim
    return dims[0].dim_param or None if dims and not dims[0].HasField("dim_value") else None


def softmax_name(head: heads.Head) -> str | None:
    return None if head.softmax is None else head.softmax.name or head.softmax.output[0]


# Finders of the tensor to attribute for an integer input, tried in order before the generic
# rule (the first float tensor computed from it). Each takes (model, input name, logits,
# value infos) and returns (tensor, why) or None: a modality plugs in here (e.g. the
# embedding lookup of token ids).
WRT_FINDERS: list = []


def choose_wrt(model: onnx.ModelProto, primary: onnx.ValueInfoProto, logits: str,
               intake: Intake, infos: dict) -> tuple[str, str]:
    """(the tensor to attribute, why): `--wrt`, the input when it is float, else what a
    finder in WRT_FINDERS says, else the first float tensor computed from it."""
    elem = primary.type.tensor_type.elem_type
    if intake.wrt is not None and (intake.wrt != primary.name or elem in FLOAT_TYPES):
        if intake.wrt not in infos:
            raise ModelError(f"--wrt {intake.wrt}: the model has no tensor of that name")
        return intake.wrt, "chosen with --wrt"
    if elem in FLOAT_TYPES:
        return primary.name, "the model input"
    for finder in WRT_FINDERS:
        chosen = finder(model, primary.name, logits, infos)
        if chosen is not None:
            return chosen
    found = cut.first_float_tensor(model, primary.name, logits, infos)
    if found is None:  # nothing float to differentiate: forward-only methods still work
        return primary.name, "the model input (no float tensor is computed from it)"
    kind = onnx.TensorProto.DataType.Name(elem).lower()
    return found, f"the first float tensor computed from the {kind} input '{primary.name}'"
