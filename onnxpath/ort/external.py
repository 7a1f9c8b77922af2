"""Weights stored outside the .onnx file ("external data").

Models over 2 GB cannot be one protobuf, so their weights live in side files, and many smaller
exports do the same. onnxpath reads such models without their weights (`load_external_data=False`)
and keeps them that way wherever it can: shape inference, rule checks and graph rewrites only need
the graph. Three places need care:

- a location must stay inside the model's folder, or a crafted model could make us read any file;
- ONNX Runtime resolves external data against a folder it is told about
  (`session_config_folder`), since a rewritten graph is handed over as bytes;
- gradient rules may read weight values (a stride-1 Conv backward flips its kernel), so those are
  loaded into a copy for the build and put back as references afterwards (`restore_references`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import onnx
from onnx import TensorProto

from onnxpath.errors import ModelError
from onnxpath.ort.weights import is_placeholder

SMALL_TENSOR = 4096  # elements: shape constants and the like, read eagerly for shape inference


def all_tensors(model: onnx.ModelProto) -> Iterator[TensorProto]:
    """Initializers and attribute tensors, subgraphs (If/Loop bodies) included."""
    stack = [model.graph]
    while stack:
        graph = stack.pop()
        yield from graph.initializer
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
                if attr.HasField("g"):
                    stack.append(attr.g)
                stack.extend(attr.graphs)


def is_external(tensor: TensorProto) -> bool:
    return tensor.data_location == TensorProto.EXTERNAL


def location(tensor: TensorProto) -> str:
    return next((e.value for e in tensor.external_data if e.key == "location"), "")


def has_external_data(model: onnx.ModelProto) -> bool:
    return any(is_external(t) for t in all_tensors(model))


def has_file_data(model: onnx.ModelProto) -> bool:
    """Whether tensors are read from external data files (not from the in-memory weight store
    of weights.py, whose placeholders are external tensors too)."""
    return any(is_external(t) and not is_placeholder(t) for t in all_tensors(model))


def external_files(model: onnx.ModelProto) -> list[str]:
    return sorted({location(t) for t in all_tensors(model)
                   if is_external(t) and not is_placeholder(t)})


def numel(tensor: TensorProto) -> int:
    n = 1
    for d in tensor.dims:
        n *= d
    return n


def check_locations(model: onnx.ModelProto, folder: Path, model_path: Path) -> None:
    """Refuse external data that points outside the model's folder, or is missing."""
    root = folder.resolve()
    for tensor in all_tensors(model):
        if not is_external(tensor):
            continue
        where = location(tensor)
        target = (root / where).resolve()
        if not where or os.path.isabs(where) or not target.is_relative_to(root):
            raise ModelError(f"{model_path}: weights of tensor '{tensor.name}' are stored at "
                             f"'{where}', outside the model's folder; refusing to read it (keep "
                             "the external data files next to the .onnx file)")
        if not target.is_file():
            raise ModelError(f"{model_path}: external data file '{where}' for tensor "
                             f"'{tensor.name}' is missing; copy it next to the .onnx file")


def load_small_tensors(model: onnx.ModelProto, folder: Path) -> onnx.ModelProto:
    """Read small external tensors (shape constants) so shape inference can use their values;
    weights stay on disk."""
    for tensor in all_tensors(model):
        if is_external(tensor) and numel(tensor) <= SMALL_TENSOR:
            onnx.external_data_helper.load_external_data_for_tensor(tensor, str(folder))
    return model


def with_weights_loaded(model: onnx.ModelProto, folder: Path) -> onnx.ModelProto:
    """A copy whose external tensors hold their bytes, for code that reads weight values."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for tensor in all_tensors(copy):  # placeholders read from the store as they are needed
        if is_external(tensor) and not is_placeholder(tensor):
            onnx.external_data_helper.load_external_data_for_tensor(tensor, str(folder))
            tensor.data_location = TensorProto.DEFAULT
            del tensor.external_data[:]
    return copy


def restore_references(model: onnx.ModelProto, original: onnx.ModelProto) -> onnx.ModelProto:
    """Turn initializers that came from `original`'s external data back into references, so a
    rewritten graph serialises without its weights (and never into a protobuf over 2 GB)."""
    refs = {t.name: t for t in original.graph.initializer if is_external(t)}
    for tensor in model.graph.initializer:
        ref = refs.get(tensor.name)
        if ref is not None and not is_external(tensor):
            tensor.CopyFrom(ref)
    return model
