"""The small vocabulary gradient rules speak: emit an ONNX node, make a constant, ask a shape.

Rules never touch protobufs directly. Everything they emit lands in one flat node list that the
walker appends to the forward graph, so the gradient graph stays a plain ONNX model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

FLOAT_ELEM_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE,
                              onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16})
HALF_ELEM_TYPES = frozenset({onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16})
# Ops that read only a tensor's shape or type: a widening Cast before them would be waste.
SHAPE_ONLY_OPS = frozenset({"Shape", "Size", "Cast", "CastLike", "EyeLike"})

Dim = int | str | None
Shape = tuple[Dim, ...] | None


@dataclass
class Node:
    """A read-only view of a forward node: its tensors by name and its attributes decoded."""

    op_type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict
    domain: str = ""
    implicit: list[str] = field(default_factory=list)  # outer tensors its subgraphs read

    @classmethod
    def from_proto(cls, proto: onnx.NodeProto) -> Node:
        attrs = {}
        for a in proto.attribute:
            value = helper.get_attribute_value(a)
            if isinstance(value, bytes):
                value = value.decode()
            attrs[a.name] = value
        implicit = sorted({name for a in proto.attribute for g in _subgraphs(a)
                           for name in _outer_names(g)})
        return cls(proto.op_type, proto.name, list(proto.input), list(proto.output), attrs,
                   proto.domain, implicit)

    def attr(self, name: str, default=None):
        return self.attrs.get(name, default)

    def input(self, i: int) -> str | None:
        """The i-th input, or None when it is absent or given as the empty name."""
        return self.inputs[i] if i < len(self.inputs) and self.inputs[i] else None


def _subgraphs(attribute: onnx.AttributeProto) -> list[onnx.GraphProto]:
    if attribute.type == onnx.AttributeProto.GRAPH:
        return [attribute.g]
    if attribute.type == onnx.AttributeProto.GRAPHS:
        return list(attribute.graphs)
    return []


def _outer_names(graph: onnx.GraphProto) -> set[str]:
    """Tensors a subgraph (If/Loop/Scan body) reads from the enclosing scope: a data
    dependency that the node's own input list does not show."""
    local = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    used: set[str] = set()
    for node in graph.node:
        used.update(i for i in node.input if i)
        for a in node.attribute:
            for g in _subgraphs(a):
                used.update(_outer_names(g))
        local.update(node.output)
    return used - local


@dataclass
class GraphBuilder:
    """Collects emitted nodes and initializers; answers shape questions from shape inference."""

    opset: int
    value_info: dict[str, tuple[int, Shape]]
    float_type: int = onnx.TensorProto.FLOAT
    differentiable: set[str] = field(default_factory=set)
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    # True: the gradient is computed in float32 where the model computes in float16 or
    # bfloat16. Every 16-bit forward tensor a rule reads is Cast up once, at the boundary, and
    # every type a rule names maps to float32, so the backward pass accumulates (Conv and
    # MatMul transposes, sums of adjoints) without 16-bit rounding at each step.
    widen: bool = False
    _count: int = 0
    _widened: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.float_type = self.computed(self.float_type)

    def computed(self, elem: int) -> int:
        """The type the gradient graph computes a tensor of type `elem` in."""
        return onnx.TensorProto.FLOAT if self.widen and elem in HALF_ELEM_TYPES else elem

    # --- the float type of the node being differentiated -----------------------------------
    def enter(self, node: Node) -> None:
        """Make `float_type` the float type of `node`'s forward tensors (its first float output,
        else its first float input), so every constant, zeros/ones and gate Cast a rule emits
        matches the tensors it meets. A mixed-precision model (float32 in and out, float16
        inside, as onnxconverter-common's keep_io_types writes) has more than one float type."""
        for name in [*node.outputs, *node.inputs]:
            elem = self.value_info.get(name, (None,))[0] if name else None
            if elem in FLOAT_ELEM_TYPES:
                self.float_type = self.computed(elem)
                return

    def elem_type(self, name: str) -> int:
        """A tensor's element type, or the current float type when shape inference left it out."""
        elem = self.value_info.get(name, (None,))[0]
        return self.computed(elem) if elem else self.float_type

    # --- naming and emission -------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        self._count += 1
        return f"onnxpath_grad/{hint}_{self._count}"

    def op(self, op_type: str, *inputs: str | None, outputs: int = 1, domain: str = "",
           out_name: str | None = None, **attrs) -> str | list[str]:
        """Emit one node; return its output name (or names when `outputs` > 1)."""
        names = [out_name or self.fresh(op_type)] if outputs == 1 else \
            [self.fresh(op_type) for _ in range(outputs)]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        if self.widen:
            if op_type == "Cast":
                attrs["to"] = self.computed(attrs["to"])
            if op_type not in SHAPE_ONLY_OPS:
                inputs = tuple(self.wide(i) for i in inputs)
        node = helper.make_node(op_type, [i or "" for i in inputs], names,
                                name=self.fresh(op_type + "_node"), domain=domain, **attrs)
        self.nodes.append(node)
        return names[0] if outputs == 1 else names

    def wide(self, name: str | None) -> str | None:
        """A 16-bit forward tensor Cast up to float32, once per tensor (widen mode)."""
        if not name or self.value_info.get(name, (None,))[0] not in HALF_ELEM_TYPES:
            return name
        if name not in self._widened:
            self._widened[name] = self.op("Cast", name, to=onnx.TensorProto.FLOAT)
        return self._widened[name]

    def result(self, grad: str, elem: int, out_name: str) -> str:
        """The gradient output `out_name` in its tensor's own type `elem`: widen mode computed
        it in float32, so a 16-bit tensor's gradient is Cast back down once, at the end."""
        if self.computed(elem) == elem:
            return self.op("Identity", grad, out_name=out_name)
        self.nodes.append(helper.make_node("Cast", [grad], [out_name], to=elem,
                                           name=self.fresh("Cast_node")))
        return out_name

    def const(self, value, dtype=None) -> str:
        """A constant initializer; floats default to the graph's float type."""
        array = np.asarray(value)
        if dtype is None:
            float_np = helper.tensor_dtype_to_np_dtype(self.float_type)
            dtype = float_np if array.dtype.kind == "f" else array.dtype
        elif self.widen and np.dtype(dtype) == np.float16:
            dtype = np.float32
        array = array.astype(dtype)
        name = self.fresh("const")
        self.initializers.append(numpy_helper.from_array(array, name))
        self.constants[name] = array
        return name

    def ones(self, shape: Sequence[int]) -> str:
        """A constant of ones in the graph's float type, made in that type (a float64 array
        first would double the memory). Callers bound `shape` by tensor shapes, never by
        attributes alone: an attribute can be as large as the exporter likes."""
        return self.const(np.ones(tuple(shape), helper.tensor_dtype_to_np_dtype(self.float_type)))

    def ints(self, values: Sequence[int]) -> str:
        return self.const(np.asarray(list(values), dtype=np.int64))

    def scalar(self, value: float) -> str:
        return self.const(np.asarray(value, dtype=helper.tensor_dtype_to_np_dtype(self.float_type)))

    # --- questions rules ask ---------------------------------------------------------------
    def needs(self, name: str | None) -> bool:
        """Whether the gradient with respect to this tensor is wanted at all."""
        return bool(name) and name in self.differentiable

    def shape(self, name: str) -> Shape:
        info = self.value_info.get(name)
        return None if info is None else info[1]

    def rank(self, name: str) -> int:
        shape = self.shape(name)
        if shape is None:
            raise ValueError(f"rank of tensor '{name}' is unknown after shape inference")
        return len(shape)

    def static_shape(self, name: str, start: int = 0) -> tuple[int, ...]:
        """Dims `start:` of a tensor, which must be known numbers (the batch may stay symbolic)."""
        shape = self.shape(name)
        if shape is None or not all(isinstance(d, int) for d in shape[start:]):
            raise ValueError(f"shape of tensor '{name}' is not static: {shape}")
        return tuple(shape[start:])

    def constant_value(self, name: str | None) -> np.ndarray | None:
        """The value of an initializer or Constant output, when the graph fixes it."""
        return None if not name else self.constants.get(name)

    # --- common compositions ---------------------------------------------------------------
    def shape_of(self, name: str) -> str:
        return self.op("Shape", name)

    def reduce_sum(self, x: str, axes: Sequence[int], keepdims: bool = True) -> str:
        if not axes:
            return x
        return self.op("ReduceSum", x, self.ints(axes), keepdims=int(keepdims))

    def reduce(self, op_type: str, x: str, axes: Sequence[int], keepdims: bool = True) -> str:
        """ReduceMean/ReduceMax/...: axes moved from attribute to input at opset 18."""
        if op_type == "ReduceSum" or self.opset >= 18:
            return self.op(op_type, x, self.ints(axes), keepdims=int(keepdims))
        return self.op(op_type, x, axes=list(axes), keepdims=int(keepdims))

    def reshape_like(self, x: str, like: str) -> str:
        return self.op("Reshape", x, self.shape_of(like))

    def zeros_like(self, like: str) -> str:
        zero = onnx.helper.make_tensor("value", self.elem_type(like), [1], [0.0])
        return self.op("ConstantOfShape", self.shape_of(like), value=zero)

    def scatter_add(self, data: str, indices: str, updates: str, axis: int) -> str:
        """ScatterElements(reduction=add). ONNX Runtime's CPU kernel has no 16-bit float version
        of it: such tensors are scattered in float32 and cast back (the sums gain accuracy)."""
        if self.float_type not in (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16):
            return self.op("ScatterElements", data, indices, updates, axis=axis,
                           reduction="add")
        wide = onnx.TensorProto.FLOAT
        summed = self.op("ScatterElements", self.op("Cast", data, to=wide), indices,
                         self.op("Cast", updates, to=wide), axis=axis, reduction="add")
        return self.op("Cast", summed, to=self.float_type)

    def unbroadcast(self, grad: str, target: str, result: str) -> str:
        """Sum a gradient shaped like the broadcast `result` back to the shape of `target`."""
        return self.sum_to(grad, self.shape(result), self.shape(target), target)

    def sum_to(self, grad: str, r_shape: Shape, t_shape: Shape, target: str) -> str:
        """Sum `grad` (shaped `r_shape`) over broadcast axes to `t_shape`, shaped like `target`."""
        if t_shape is None or r_shape is None:
            raise ValueError(f"cannot unbroadcast to '{target}': shape unknown")
        if tuple(t_shape) == tuple(r_shape) and all(d is not None for d in t_shape):
            return grad
        lead = len(r_shape) - len(t_shape)
        axes = list(range(lead))
        for i, d in enumerate(t_shape):
            if d == 1 and r_shape[lead + i] != 1:
                axes.append(lead + i)
        summed = self.reduce_sum(grad, axes, keepdims=True)
        if lead == 0:
            return summed
        return self.reshape_like(summed, target)
