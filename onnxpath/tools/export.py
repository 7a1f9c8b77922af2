"""The gradient graph as a standalone ONNX model that any ONNX Runtime binding can run.

Signature (documented in the README):
- default: inputs `<model input>`; outputs `logits`, `target` (the argmax, int64) and `grad`,
  the gradient of the target logit with respect to the input (what `attribute --method
  gradient` computes);
- target-independent: inputs `<model input>` and `seed` (shaped like `logits`); outputs
  `logits` and `grad` = d(sum(seed · logits)) / d input, so one graph serves every class and
  any weighting of classes.
Spatial dims are fixed (gradient rules need static shapes); a dynamic batch stays dynamic.
A model with several inputs (a text model's input_ids, attention_mask, token_type_ids) takes
them all, each fixed alike (`--size 1x8`: 8 tokens); `grad` is then with respect to the tensor
`attribute` attributes (the embedding output), not the integer ids.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxpath.autodiff import SEED, grad_name, gradient_graph
from onnxpath.autodiff.walk import value_infos
from onnxpath.errors import UsageError
from onnxpath.explainer import Explainer
from onnxpath.io.outputs import write_atomic
from onnxpath.ort.external import has_external_data, has_file_data, is_external
from onnxpath.ort.sessions import PROTOBUF_LIMIT
from onnxpath.ort.weights import inline, stores_of
from onnxpath.version import __version__

NAMES = ("logits", "grad", "seed", "target")
EXTERNAL_MIN_BYTES = 1024  # when weights go external, smaller tensors stay inline


def rename_tensor(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for field in (node.input, node.output):
            for i, name in enumerate(field):
                if name == old:
                    field[i] = new
    for value in [*graph.input, *graph.output, *graph.value_info, *graph.initializer]:
        if value.name == old:
            value.name = new


def tensor_names(graph: onnx.GraphProto) -> set[str]:
    names = {v.name for v in [*graph.input, *graph.output, *graph.initializer]}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
    return names


def gradient_export(explainer: Explainer, size: tuple[int, int] | None = None,
                    target_independent: bool = False) -> onnx.ModelProto:
    """The exported gradient graph of `explainer`'s model (see the module docstring)."""
    explainer.check_differentiable()
    dims = list(explainer.input_shape[1:])
    dynamic = [i for i, d in enumerate(dims) if not isinstance(d, int)]
    if dynamic and not size:
        raise UsageError("the model's spatial size is dynamic; give --size HxW (the exported "
                         "gradient graph has fixed spatial dims; a text model: --size 1xT for "
                         "T tokens)")
    # HxW fills the dynamic dims from the right: a text model's one dynamic dim (the sequence)
    # takes W, so `--size 1x8` fixes it to 8, as an image's H and W take both.
    values = list(size or ())[-len(dynamic):] if dynamic else []
    fill = iter(values[:1] * (len(dynamic) - len(values)) + values)
    dims = [d if isinstance(d, int) else next(fill) for d in dims]
    engine = explainer.engine((1, *dims), other_shapes(explainer, (1, *dims)))
    if engine.info.uncut is not None:
        # An integer input: the graph takes the model's own inputs and differentiates the
        # float tensor computed from them (`wrt`), as `attribute` does.
        model = gradient_graph(engine.info.uncut, engine.info.logits, [engine.input_name])
    else:
        model = engine.gradient_model([engine.input_name])
    graph = model.graph
    input_name = engine.input_name
    if input_name in NAMES:
        raise UsageError(f"the model's input is named '{input_name}', which the exported graph "
                         f"uses for another tensor ({', '.join(NAMES)})")
    wanted = {engine.info.logits: "logits", grad_name(input_name): "grad", SEED: "seed"}
    for name in NAMES:  # free our names where the model already uses them
        if name in tensor_names(graph) and name not in wanted:
            rename_tensor(graph, name, f"onnxpath/{name}")
    for old, new in wanted.items():
        if old != new:
            rename_tensor(graph, old, new)
    if not target_independent:
        seed_from_argmax(model)
    model.producer_name, model.producer_version = "onnxpath", __version__
    model.doc_string = signature_text(model)
    return model


def other_shapes(explainer: Explainer, shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """The shapes of the model's other inputs (a text model's attention_mask, ...) when its
    input has `shape`: their static dims, and each dynamic one from the input's dim of the
    same name (else of the same axis). Left dynamic, they leave the shapes between the cut
    and the logits unknown, and gradient rules cannot apply (a Gather along a dynamic axis)."""
    primary = next(i for i in explainer.inputs if i.name == explainer.input_name)
    names = [d.dim_param for d in primary.type.tensor_type.shape.dim]
    out = {}
    for value in explainer.inputs:
        if value.name == primary.name:
            continue
        dims = []
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                dims.append(dim.dim_value)
            elif dim.dim_param and dim.dim_param in names:
                dims.append(shape[names.index(dim.dim_param)])
            elif axis < len(shape):
                dims.append(shape[axis])
            else:
                raise UsageError(f"the shape of the model's input '{value.name}' cannot be "
                                 f"derived from '{primary.name}' {tuple(shape[1:])}: export "
                                 "needs static shapes for every input")
        out[value.name] = (1, *dims[1:])
    return out


def seed_from_argmax(model: onnx.ModelProto) -> None:
    """Replace the `seed` input by one-hot(argmax(logits)), and output the argmax as `target`."""
    graph = model.graph
    shape = value_infos(model).get("logits", (0, None))[1]
    if not shape or not isinstance(shape[-1], int):
        raise UsageError("the class dimension of the logits is not static; export with "
                         "--target-independent and feed a seed")
    float_type = next(i.type.tensor_type.elem_type for i in graph.input if i.name == "seed")
    depth = numpy_helper.from_array(np.array([shape[-1]], "int64"),
                                    "onnxpath/classes")
    values = helper.make_tensor("onnxpath/one_hot_values", float_type, [2], [0.0, 1.0])
    nodes = [helper.make_node("ArgMax", ["logits"], ["target"], axis=-1, keepdims=0,
                              name="onnxpath/target"),
             helper.make_node("OneHot", ["target", depth.name, values.name], ["seed"],
                              axis=-1, name="onnxpath/seed")]
    at = next(k for k, n in enumerate(graph.node) if "logits" in n.output) + 1
    for k, node in enumerate(nodes):
        graph.node.insert(at + k, node)
    graph.initializer.extend([depth, values])
    kept = [i for i in graph.input if i.name != "seed"]
    del graph.input[:]
    graph.input.extend(kept)
    graph.output.insert(1, helper.make_tensor_value_info("target", TensorProto.INT64,
                                                         list(shape[:-1])))


def signature(model: onnx.ModelProto) -> dict:
    def describe(v):
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                for d in t.shape.dim]
        return {"name": v.name, "shape": dims,
                "dtype": helper.tensor_dtype_to_np_dtype(t.elem_type).name}
    return {"inputs": [describe(v) for v in model.graph.input],
            "outputs": [describe(v) for v in model.graph.output]}


def signature_text(model: onnx.ModelProto) -> str:
    sig = signature(model)
    rows = [f"{kind[:-1]:<6} {v['name']:<12} {'×'.join(map(str, v['shape'])):<18} {v['dtype']}"
            for kind in ("inputs", "outputs") for v in sig[kind]]
    return "\n".join(rows)


def save_model(model: onnx.ModelProto, out: Path, folder: Path | None) -> list[Path]:
    """Write `model` atomically. When its weights are external or too big for one protobuf,
    they go to `<out>.data` beside it (written first, so the model never points at nothing)."""
    held = sum(store.nbytes for store in stores_of(model))  # weights in the shared file
    if held and not has_file_data(model) and model.ByteSize() + held < PROTOBUF_LIMIT:
        model = inline(model)  # small enough for one file: the weights go back inside
    if not has_external_data(model) and model.ByteSize() < PROTOBUF_LIMIT:
        return [write_atomic(out, model.SerializeToString())]
    out.parent.mkdir(parents=True, exist_ok=True)
    data = out.with_name(out.name + ".data")
    fd, tmp = tempfile.mkstemp(prefix=f".{data.name}.", suffix=".part", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            for tensor in model.graph.initializer:
                if not is_external(tensor) and tensor.ByteSize() < EXTERNAL_MIN_BYTES:
                    continue
                raw = numpy_helper.to_array(tensor, str(folder or "")).tobytes()
                offset = f.tell()
                f.write(raw)
                ref = TensorProto(name=tensor.name, data_type=tensor.data_type,
                                  dims=tensor.dims, data_location=TensorProto.EXTERNAL)
                for key, value in (("location", data.name), ("offset", str(offset)),
                                   ("length", str(len(raw)))):
                    ref.external_data.add(key=key, value=value)
                tensor.CopyFrom(ref)
        os.replace(tmp, data)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return [write_atomic(out, model.SerializeToString()), data]
