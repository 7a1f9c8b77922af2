"""Helpers the contrib-op rewrites share (intake/unfuse*.py): fresh tensor names, constants,
and the few standard ops whose form depends on the model's opset (Unsqueeze, Split and the
Reduce ops took their axes as attributes before opset 13/18)."""

from __future__ import annotations

import contextlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MS = "com.microsoft"


def opset_of(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def attrs_of(node: onnx.NodeProto) -> dict:
    values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in values.items()}


def given(node: onnx.NodeProto, index: int) -> str | None:
    """The node's input `index`, or None where it is absent or left empty."""
    return node.input[index] if len(node.input) > index and node.input[index] else None


def output(node: onnx.NodeProto, index: int) -> str | None:
    return node.output[index] if len(node.output) > index and node.output[index] else None


def _shapes_only(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with its large initializers as declared inputs: shape inference needs their
    shapes, not their data (small ones, Reshape's shapes among them, stay constants), and a big
    model is not copied whole for it."""
    light = onnx.ModelProto(ir_version=model.ir_version, opset_import=model.opset_import)
    graph = onnx.GraphProto()
    graph.node.extend(model.graph.node)
    graph.input.extend(model.graph.input)
    graph.output.extend(model.graph.output)
    graph.value_info.extend(model.graph.value_info)
    declared = {i.name for i in model.graph.input}
    for tensor in model.graph.initializer:
        if int(np.prod(tensor.dims)) <= 4096:
            graph.initializer.append(tensor)
        elif tensor.name not in declared:
            graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type,
                                                             list(tensor.dims)))
    light.graph.CopyFrom(graph)
    light.functions.extend(model.functions)
    return light


class Writer:
    """New tensor names and initializers for a whole model, and what is known of its tensors
    (element types, ranks, consumers) from value_info, inputs and initializers."""

    def __init__(self, model: onnx.ModelProto):
        graph = model.graph
        known = graph.value_info
        # onnx infers what its own ops compute (a mask Cast, ReduceSum of it); the contrib ops'
        # outputs stay unknown, except those a rewrite records (EmbedLayerNorm's mask_index).
        with contextlib.suppress(Exception):
            known = onnx.shape_inference.infer_shapes(_shapes_only(model)).graph.value_info
        self.taken = {n for node in graph.node for n in (*node.input, *node.output)}
        self.taken |= {t.name for t in graph.initializer}
        self.taken |= {v.name for v in (*graph.input, *graph.output, *graph.value_info)}
        self.taken |= {n.name for n in graph.node}
        values = [v for v in (*known, *graph.input, *graph.output, *graph.value_info)
                  if v.type.HasField("tensor_type")]
        self.elem_types = {v.name: v.type.tensor_type.elem_type for v in values
                           if v.type.tensor_type.elem_type}
        self.elem_types.update({t.name: t.data_type for t in graph.initializer})
        self.ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in values
                      if v.type.tensor_type.HasField("shape")}
        self.ranks.update({t.name: len(t.dims) for t in graph.initializer})
        self.dims = {v.name: [d.dim_value if d.HasField("dim_value") else None
                              for d in v.type.tensor_type.shape.dim] for v in values
                     if v.type.tensor_type.HasField("shape")}
        self.dims.update({t.name: list(t.dims) for t in graph.initializer})
        self.initial = list(graph.initializer)
        self.used = {n for node in graph.node for n in node.input} | {o.name for o in graph.output}
        self.producers = {o: node for node in graph.node for o in node.output}
        self.graph_inputs = {i.name for i in graph.input}
        self.opset = opset_of(model)
        self.initializers: list[onnx.TensorProto] = []

    def undo(self, count: int) -> None:
        """Drop the constants written after the first `count`: a rewrite that gave up."""
        del self.initializers[count:]

    def name(self, base: str) -> str:
        name, i = base, 0
        while name in self.taken:
            i += 1
            name = f"{base}_{i}"
        self.taken.add(name)
        return name

    def const(self, base: str, value, elem: int) -> str:
        dtype = helper.tensor_dtype_to_np_dtype(elem)
        name = self.name(base)
        self.initializers.append(numpy_helper.from_array(np.array(value, dtype=dtype), name))
        return name

    def elem(self, node: onnx.NodeProto) -> int:
        for tensor in (node.output[0], node.input[0]):
            if tensor in self.elem_types:
                return self.elem_types[tensor]
        return TensorProto.FLOAT


class Nodes:
    """The standard nodes that replace one fused node, named under its name."""

    def __init__(self, w: Writer, node: onnx.NodeProto):
        self.w, self.node, self.nodes = w, node, []
        self.prefix = node.name or node.output[0]
        self.elem = w.elem(node)

    def op(self, kind: str, *inputs: str, out: str | None = None, outputs: int = 1,
           **attrs) -> str | list[str]:
        names = [out] if out else [self.w.name(f"{self.prefix}/{kind.lower()}_out{i or ''}")
                                   for i in range(outputs)]
        self.nodes.append(helper.make_node(kind, list(inputs), names,
                                           name=self.w.name(f"{self.prefix}/{kind}"), **attrs))
        return names[0] if outputs == 1 else names

    def const(self, value, elem: int | None = None) -> str:
        return self.w.const(f"{self.prefix}/c", value, self.elem if elem is None else elem)

    def ints(self, values) -> str:
        return self.w.const(f"{self.prefix}/i", values, TensorProto.INT64)

    def unsqueeze(self, x: str, axes: list[int]) -> str:
        if self.w.opset < 13:
            return self.op("Unsqueeze", x, axes=axes)
        return self.op("Unsqueeze", x, self.ints(axes))

    def reduce(self, kind: str, x: str, axes: list[int], keepdims: int = 1,
               out: str | None = None) -> str:
        if self.w.opset < (13 if kind == "ReduceSum" else 18):
            return self.op(kind, x, out=out, axes=axes, keepdims=keepdims)
        return self.op(kind, x, self.ints(axes), out=out, keepdims=keepdims)

    def split(self, x: str, sizes: list[int], axis: int) -> list[str]:
        if self.w.opset < 13:
            return self.op("Split", x, outputs=len(sizes), axis=axis, split=sizes)
        return self.op("Split", x, self.ints(sizes), outputs=len(sizes), axis=axis)

    def length(self, x: str, axis: int) -> str:
        """Dimension `axis` of x, as a 1-element int64 tensor."""
        return self.op("Slice", self.op("Shape", x), self.ints([axis]), self.ints([axis + 1]))

    def arange(self, count: str) -> str:
        """0, 1, … count-1 (int64) for a 1-element int64 tensor `count`."""
        scalar = self.op("Squeeze", count)  # its one axis: every opset's form
        zero, one = self.const(0, TensorProto.INT64), self.const(1, TensorProto.INT64)
        return self.op("Range", zero, scalar, one)
