"""Load an ONNX model and put it in the one shape the rest of onnxpath differentiates.

Normalisation: initializers dropped from the inputs of IR < 4 models, opset raised to at least
OPSET_FLOOR, auto_pad made explicit, dynamic dims other than the batch fixed from the actual
input, and the pre-softmax logits located. Weights in external data files stay on disk.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import helper, version_converter

from .autodiff.rules.conv import window_geometry
from .autodiff.walk import value_infos
from .errors import ModelError
from .external import check_locations, has_external_data, load_small_tensors
from .fold import fold_shape_arithmetic

OPSET_FLOOR = 17
PROBABILITY_OPS = ("Softmax", "LogSoftmax")
# Ops that may follow the Softmax without changing which value is which class's probability.
RESHAPING_OPS = ("Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze")
LOGITS = "onnxpath_logits"  # the Softmax input, reshaped like the output, when the two differ
WINDOW_OPS = ("Conv", "MaxPool", "AveragePool", "LpPool")


@dataclass
class ModelInfo:
    """A normalised model and the names onnxpath needs from it."""

    proto: onnx.ModelProto
    input_name: str
    input_shape: tuple  # as declared: ints, or names/None for dynamic dims
    logits: str  # the tensor that attributions differentiate
    output: str  # the model's own first output (probabilities when it ends in Softmax)
    path: Path | None = None

    @property
    def ends_in_softmax(self) -> bool:
        return self.logits != self.output

    @property
    def folder(self) -> Path | None:
        """Where external data files are resolved (the model file's folder)."""
        return self.path.parent if self.path is not None else None


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read a model from disk with one-line errors for bad files. Weights kept in external data
    files stay there (only small shape constants are read); their locations are checked."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelError(f"model path is a directory, not an .onnx file: {path}")
    try:
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
    return model


def data_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def declared_shape(value: onnx.ValueInfoProto) -> tuple:
    dims = value.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims)


def opset_of(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def drop_initializer_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """IR < 4 lists weights among the graph inputs; ONNX Runtime then cannot fold them."""
    kept = data_inputs(model)
    del model.graph.input[:]
    model.graph.input.extend(kept)
    return model


def upgrade_opset(model: onnx.ModelProto, floor: int = OPSET_FLOOR) -> onnx.ModelProto:
    if opset_of(model) >= floor:
        return model
    try:
        model = version_converter.convert_version(model, floor)
    except Exception as err:
        raise ModelError(f"cannot upgrade the model from opset {opset_of(model)} to {floor}: "
                         f"{err}".splitlines()[0]) from err
    return model


def fix_input_shape(model: onnx.ModelProto, shape: tuple[int, ...],
                    name: str | None = None) -> onnx.ModelProto:
    """Fix every dynamic dim but the batch to the actual input's, so shapes infer statically.
    `name`: which input (default: the first)."""
    inputs = data_inputs(model)
    value = next(i for i in inputs if i.name == name) if name else inputs[0]
    dims = value.type.tensor_type.shape.dim
    if len(dims) != len(shape):
        raise ModelError(f"input '{value.name}' has rank {len(dims)}, the input has rank "
                         f"{len(shape)} {tuple(shape)}")
    for i, (dim, size) in enumerate(zip(dims, shape, strict=True)):
        if dim.HasField("dim_value"):
            if dim.dim_value != size and i > 0:
                raise ModelError(f"input '{value.name}' expects shape {declared_shape(value)}, "
                                 f"got {tuple(shape)}")
        elif i > 0:
            dim.dim_value = size
        elif not dim.dim_param:
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
        from .autodiff.builder import Node
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


def first_float_output(model: onnx.ModelProto) -> str:
    """The first output that is a float tensor: skl2onnx's int64 `label` (and a ZipMap's
    sequence of maps) come before the probabilities."""
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16)
    for output in model.graph.output:
        if output.type.HasField("tensor_type") and output.type.tensor_type.elem_type in floats:
            return output.name
    return model.graph.output[0].name


def trailing_softmax(model: onnx.ModelProto) -> tuple[onnx.NodeProto | None, list]:
    """(the Softmax the first output comes from, the reshaping nodes after it, in order)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    name, trailing = first_float_output(model), []
    while name in producers and producers[name].op_type in RESHAPING_OPS:
        trailing.append(producers[name])
        name = producers[name].input[0]
    node = producers.get(name)
    if node is not None and node.op_type in PROBABILITY_OPS:
        return node, trailing[::-1]
    return None, []


def find_logits(model: onnx.ModelProto, keep_probabilities: bool = False) -> tuple[str, str]:
    """(tensor to differentiate, model output): the Softmax input when the graph ends in one.
    When reshapes follow the Softmax, `normalise` re-applies them to its input (`LOGITS`)."""
    output = first_float_output(model)
    if keep_probabilities:
        return output, output
    softmax, _ = trailing_softmax(model)
    return (softmax.input[0], output) if softmax is not None else (output, output)


def reshape_logits_like_output(model: onnx.ModelProto) -> str:
    """Replay the reshapes that follow the Softmax on its input, so the logits have the
    output's shape (SqueezeNet: Softmax over N×1000×1×1, then Flatten)."""
    softmax, trailing = trailing_softmax(model)
    if not any(n.op_type != "Identity" for n in trailing):
        return softmax.input[0]
    renamed = {softmax.output[0]: softmax.input[0]}
    for k, node in enumerate(trailing):
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = f"{LOGITS}/{node.name or k}"
        del copy.input[:]
        copy.input.extend(renamed.get(i, i) for i in node.input)
        del copy.output[:]
        out = LOGITS if k == len(trailing) - 1 else f"{LOGITS}/{k}"
        copy.output.append(out)
        renamed[node.output[0]] = out
        model.graph.node.append(copy)
    return LOGITS


def normalise(model: onnx.ModelProto, input_shape: tuple[int, ...] | None = None,
              keep_probabilities: bool = False,
              side_shapes: dict[str, tuple[int, ...]] | None = None) -> ModelInfo:
    """Normalise `model` for differentiation; `input_shape` resolves its dynamic dims. With
    `side_shapes`, the first input is the differentiated one and the others are side inputs
    (an attention mask, token types) of those shapes."""
    inputs = data_inputs(model)
    if len(inputs) != 1 and not side_shapes:
        names = ", ".join(i.name for i in inputs)
        raise ModelError(f"onnxpath explains models with one tensor input; this one has "
                         f"{len(inputs)} ({names})")
    declared = declared_shape(inputs[0])
    model = drop_initializer_inputs(model)
    # Raise IR first: under IR < 4 the version converter takes initializers that are not graph
    # inputs for undefined tensors.
    if model.ir_version < 7:
        model.ir_version = 7
    model = upgrade_opset(model)
    if input_shape is not None:
        model = fix_input_shape(model, tuple(input_shape))
        for name, shape in (side_shapes or {}).items():
            model = fix_input_shape(model, tuple(shape), name)
        model = fold_shape_arithmetic(model)
        model = explicit_pads(model)
    logits, output = find_logits(model, keep_probabilities)
    if logits != output:
        logits = reshape_logits_like_output(model)
    return ModelInfo(model, inputs[0].name, declared, logits, output)
