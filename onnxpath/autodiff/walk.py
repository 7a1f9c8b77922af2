"""Reverse-mode walk over an ONNX graph: visit only the nodes between `wrt` and `of`, in reverse
topological order, sum the adjoints that meet, and emit only the gradients asked for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import onnx
from onnx import helper

from onnxpath.autodiff.builder import FLOAT_ELEM_TYPES, GraphBuilder, Node
from onnxpath.autodiff.rules import RULES, Rule
from onnxpath.errors import ModelError, UnsupportedOpError

FLOAT_TYPES = FLOAT_ELEM_TYPES

SEED = "onnxpath_seed"
# Rules emit ops in the model's own opset and use ScatterElements(reduction=add) (16),
# Shape(start, end) (15) and axes as inputs (13). normalise() upgrades older models.
MIN_OPSET = 16


def grad_name(wrt: str) -> str:
    return f"onnxpath_grad/{wrt}"


SMALL_CONSTANT = 4096  # elements; larger initializers are weights, irrelevant to shape inference


def _weightless(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy for shape inference: big initializers become typed inputs, so no weight bytes are
    serialised (that dominated the build time of ResNet-50-sized models)."""
    graph = model.graph
    light = helper.make_graph(
        list(graph.node), graph.name, list(graph.input), list(graph.output),
        initializer=[i for i in graph.initializer if _numel(i) <= SMALL_CONSTANT],
        value_info=list(graph.value_info))
    light.input.extend(helper.make_tensor_value_info(i.name, i.data_type, list(i.dims))
                       for i in graph.initializer if _numel(i) > SMALL_CONSTANT)
    return helper.make_model(light, opset_imports=model.opset_import, ir_version=model.ir_version)


def _numel(tensor: onnx.TensorProto) -> int:
    n = 1
    for d in tensor.dims:
        n *= d
    return n


def value_infos(model: onnx.ModelProto) -> dict[str, tuple[int, tuple | None]]:
    """Element type and shape (ints, symbolic names or None) of every typed tensor."""
    inferred = onnx.shape_inference.infer_shapes(_weightless(model), data_prop=True)
    graph = inferred.graph
    infos: dict[str, tuple[int, tuple | None]] = {}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        t = vi.type.tensor_type
        shape = None
        if t.HasField("shape"):
            shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                          for d in t.shape.dim)
        infos[vi.name] = (t.elem_type, shape)
    for init in graph.initializer:
        infos[init.name] = (init.data_type, tuple(init.dims))
    return infos


class _Constants(dict):
    """Initializer and Constant values, converted to numpy only when a rule asks."""

    def __init__(self, graph: onnx.GraphProto):
        super().__init__()
        self._protos = {init.name: init for init in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and node.attribute and \
                    node.attribute[0].name == "value":
                self._protos[node.output[0]] = node.attribute[0].t

    def get(self, name, default=None):
        if name not in self and name in self._protos:
            self[name] = onnx.numpy_helper.to_array(self._protos[name])
        return super().get(name, default)


def _reads(node: Node) -> list[str]:
    """Every tensor a node depends on, subgraph reads from the outer scope included."""
    return [i for i in node.inputs if i] + node.implicit


def _forward_reach(nodes: Sequence[Node], wrt: Sequence[str], infos) -> set[str]:
    reached = set(wrt)
    for node in nodes:
        if any(i in reached for i in _reads(node)):
            reached.update(o for o in node.outputs
                           if o and infos.get(o, (onnx.TensorProto.FLOAT,))[0] in FLOAT_TYPES)
    return reached


def _backward_reach(nodes: Sequence[Node], of: str) -> set[str]:
    needed = {of}
    for node in reversed(nodes):
        if any(o in needed for o in node.outputs):
            needed.update(_reads(node))
    return needed


def _active_nodes(nodes: Sequence[Node], of: str, wrt: Sequence[str], infos) -> list[Node]:
    reach = _forward_reach(nodes, wrt, infos)
    needed = _backward_reach(nodes, of)
    # A node is differentiated only when a float output of it both depends on `wrt` and reaches
    # `of`. Shape, ArgMax, Equal, NonZero... take reached inputs but give ints or bools: their
    # outputs never carry an adjoint, so they need no rule. An If/Loop that reads a reached
    # tensor inside its subgraph is active too, and without a rule it is refused rather than
    # silently cutting the gradient.
    return [n for n in nodes
            if any(i in reach for i in _reads(n))
            and any(o in reach and o in needed for o in n.outputs if o)]


def missing_rules(model: onnx.ModelProto, of: str, wrt: Sequence[str],
                  overrides: Mapping[str, Rule] | None = None) -> list[tuple[str, str]]:
    """(op type, node name) of every node between `wrt` and `of` that has no gradient rule.
    Cheap (types only, no weights touched), so commands can refuse a model before any input."""
    table = {**RULES, **(overrides or {})}
    nodes = [Node.from_proto(n) for n in model.graph.node]
    return _without_rule(_active_nodes(nodes, of, wrt, value_infos(model)), table)


def _without_rule(nodes: Sequence[Node], table: Mapping[str, Rule]) -> list[tuple[str, str]]:
    return [(n.op_type, n.name or n.outputs[0]) for n in nodes
            if n.op_type not in table or n.domain not in ("", "ai.onnx")]


def gradient_graph(model: onnx.ModelProto, of: str, wrt: Sequence[str],
                   overrides: Mapping[str, Rule] | None = None,
                   extra_outputs: Sequence[str] = (), widen: bool = False) -> onnx.ModelProto:
    """Append the gradient of `sum(seed * of)` with respect to each `wrt` tensor to `model`.

    The result takes the model's inputs plus `onnxpath_seed` (shaped like `of`) and returns
    `of`, then `onnxpath_grad/<name>` for each `wrt`, then `extra_outputs`. Weight gradients are
    never emitted: only tensors that depend on a `wrt` tensor carry adjoints. `widen`: a
    float16 or bfloat16 model's gradient is computed in float32 (see `GraphBuilder.widen`);
    the forward pass and the outputs keep the model's types.
    """
    graph = model.graph
    table = {**RULES, **(overrides or {})}
    infos = value_infos(model)
    if of not in infos:
        raise ModelError(f"tensor '{of}' is not in the model")
    nodes = [Node.from_proto(n) for n in graph.node]
    active = _active_nodes(nodes, of, wrt, infos)
    missing = _without_rule(active, table)
    if missing:
        raise UnsupportedOpError(missing)
    reach = _forward_reach(nodes, wrt, infos)
    needed = _backward_reach(nodes, of)

    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < MIN_OPSET:
        raise ModelError(f"the gradient graph needs opset >= {MIN_OPSET}, the model has {opset}; "
                         "normalise() it (or run onnx.version_converter) first")
    float_type = infos[of][0]
    b = GraphBuilder(opset=opset, value_info=infos, float_type=float_type,
                     differentiable=reach & needed, constants=_Constants(graph), widen=widen)
    seed_in = SEED if b.computed(float_type) == float_type else \
        b.op("Cast", SEED, to=b.float_type)
    adjoints: dict[str, list[str]] = {of: [seed_in]}

    def total(name: str) -> str | None:
        parts = adjoints.get(name)
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else b.op("Sum", *parts)

    for node in reversed(active):
        dy = [total(o) if o else None for o in node.outputs]
        if all(g is None for g in dy):
            continue
        b.enter(node)
        try:
            grads = table[node.op_type](node, dy, b)
        except (ValueError, NotImplementedError) as err:
            raise ModelError(f"cannot differentiate {node.op_type} node '{node.name}': {err}") \
                from err
        for name, g in zip(node.inputs, grads, strict=False):
            if g is not None and b.needs(name):
                adjoints.setdefault(name, []).append(g)

    outputs = [helper.make_tensor_value_info(of, float_type, infos[of][1])]
    for name in wrt:
        g = total(name)
        if g is None:  # not connected to the output: its gradient is exactly zero
            g = b.zeros_like(name)
        elem, shape = infos.get(name, (float_type, None))  # the gradient has wrt's own type
        b.result(g, elem or float_type, grad_name(name))
        outputs.append(helper.make_tensor_value_info(grad_name(name), elem or float_type, shape))
    for name in extra_outputs:
        elem, shape = infos.get(name, (float_type, None))
        outputs.append(helper.make_tensor_value_info(name, elem, shape))

    seed = helper.make_tensor_value_info(SEED, float_type, infos[of][1])
    new_graph = helper.make_graph(
        [*graph.node, *b.nodes], graph.name + "_grad", [*graph.input, seed], outputs,
        initializer=[*graph.initializer, *b.initializers])
    result = helper.make_model(new_graph, opset_imports=model.opset_import,
                               ir_version=model.ir_version)
    return prune_unused(result)


def prune_unused(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop nodes and initializers no output needs (weight-gradient branches among them)."""
    graph = model.graph
    needed = {o.name for o in graph.output}
    kept = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    kept.reverse()
    del graph.node[:]
    graph.node.extend(kept)
    inits = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    return model
