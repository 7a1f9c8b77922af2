"""Ops that onnx defines as a function of other ops: differentiated through that definition.

The ONNX spec gives many composite ops a function body (MeanVarianceNormalization,
GroupNormalization, the loss ops, Attention...). Their gradient is the gradient of the body:
the rule inlines the body with onnx's own inliner, emits it (a recomputation of the node's
outputs under fresh names) and runs the reverse pass over it with the ordinary rule table. No
formula is written twice, and the body is the spec's definition of the op.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.inliner import inline_selected_functions

from onnxpath.autodiff.builder import FLOAT_ELEM_TYPES, GraphBuilder, Node
from onnxpath.autodiff.rules import RULES, rule


def _as_proto(node: Node, opset: int) -> onnx.NodeProto:
    """The node with every defaulted attribute written out: the inliner leaves a reference to
    an attribute the node omits empty."""
    proto = helper.make_node(node.op_type, node.inputs, node.outputs, name=node.name,
                             domain=node.domain, **node.attrs)
    schema = onnx.defs.get_schema(node.op_type, opset, node.domain)
    for name, attribute in schema.attributes.items():
        if name not in node.attrs and attribute.default_value.type:
            proto.attribute.append(attribute.default_value)
    return proto


def inline_body(node: Node, b: GraphBuilder) -> tuple[list[onnx.NodeProto], dict[str, str]]:
    """The node's function body at the model's opset, its tensors renamed apart from the graph's
    (its outputs too: the original node still computes them)."""
    inputs, initializers = [], []
    for name in dict.fromkeys(i for i in node.inputs if i):
        value = b.constant_value(name)
        if value is not None:  # typed as an input too: context-dependent bodies read its type
            initializers.append(numpy_helper.from_array(np.asarray(value), name))
        elem, shape = b.value_info.get(name, (b.float_type, None))
        inputs.append(helper.make_tensor_value_info(name, elem, shape))
    graph = helper.make_graph([_as_proto(node, b.opset)], "body", inputs,
                              [helper.make_tensor_value_info(o, 0, None) for o in node.outputs
                               if o], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", b.opset)])
    try:
        inlined = inline_selected_functions(model, [(node.domain, node.op_type)],
                                            inline_schema_functions=True)
    except RuntimeError as err:  # e.g. an omitted optional input before a given one
        reason = str(err).strip().splitlines()[0].rsplit(": ", 1)[-1]
        raise ValueError(f"onnx cannot expand its function body ({reason.strip()} an input; "
                         "an omitted optional input before a given one cannot be typed)") \
            from err
    body = list(inlined.graph.node)
    if any(n.op_type == node.op_type and n.domain == node.domain for n in body):
        raise ValueError(f"onnx defines no function body for {node.op_type}")
    renamed = {o: b.fresh(f"{node.op_type}_body") for n in body for o in n.output if o}
    rename_tensors(body, renamed)
    return body, renamed


def rename_tensors(nodes, renamed: dict[str, str]) -> None:
    """Rename tensors where they are produced and read, subgraphs (If branches) included; a
    subgraph's own tensors shadow nothing, so only outer names change."""
    for n in nodes:
        n.input[:] = [renamed.get(i, i) for i in n.input]
        n.output[:] = [renamed.get(o, o) for o in n.output]
        for attribute in n.attribute:
            graphs = [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else \
                list(attribute.graphs)
            for graph in graphs:
                rename_tensors(graph.node, renamed)
                for value in graph.output:
                    value.name = renamed.get(value.name, value.name)


def _constant(proto: onnx.NodeProto) -> np.ndarray | None:
    attribute = proto.attribute[0] if len(proto.attribute) == 1 else None
    if attribute is None:
        return None
    value = helper.get_attribute_value(attribute)
    if attribute.name == "value":
        return numpy_helper.to_array(value)
    if attribute.name in ("value_float", "value_floats"):
        return np.asarray(value, np.float32)
    if attribute.name in ("value_int", "value_ints"):
        return np.asarray(value, np.int64)
    return None


def _typed_tensors(body: list[onnx.NodeProto], node: Node, b: GraphBuilder) -> None:
    """Shape-infer the body where it stands, and record its types, shapes and constants."""
    produced = {o for n in body for o in n.output}
    outer = dict.fromkeys([*(i for i in node.inputs if i),
                           *(i for n in body for i in n.input if i and i not in produced)])
    inputs, known = [], {}
    for name in outer:
        value = b.constant_value(name)
        if value is None:
            elem, shape = b.value_info.get(name, (b.float_type, None))
        else:
            value = known[name] = np.asarray(value)
            elem, shape = helper.np_dtype_to_tensor_dtype(value.dtype), value.shape
            b.value_info.setdefault(name, (elem, shape))
        inputs.append(helper.make_tensor_value_info(name, elem, shape))
    folded: dict[str, np.ndarray] = {}
    for _ in range(4):  # each round of folding can give shape inference more to go on
        infos = _infer([n for n in body if not all(o in folded for o in n.output)], inputs,
                       {**known, **folded}, b.opset)
        more = _fold_shape_arithmetic(body, {**known, **folded}, {**b.value_info, **infos},
                                      b.opset)
        if not more.keys() - folded.keys():
            break
        folded.update(more)
    for name, info in infos.items():
        b.value_info.setdefault(name, info)
    for name, value in folded.items():
        b.constants[name] = value
        b.value_info.setdefault(name, (helper.np_dtype_to_tensor_dtype(value.dtype),
                                       value.shape))
    for proto in body:
        if proto.op_type == "Constant":
            value = _constant(proto)
            if value is not None:
                b.constants[proto.output[0]] = value


def _infer(body: list[onnx.NodeProto], inputs, values: dict[str, np.ndarray],
           opset: int) -> dict[str, tuple]:
    graph = helper.make_graph(body, "body", inputs, [],
                              [numpy_helper.from_array(v, k) for k, v in values.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    infos = {}
    for value in onnx.shape_inference.infer_shapes(model, data_prop=True).graph.value_info:
        t = value.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                      for d in t.shape.dim) if t.HasField("shape") else None
        infos[value.name] = (t.elem_type, shape)
    return infos


def _fold_shape_arithmetic(body: list[onnx.NodeProto], values: dict[str, np.ndarray],
                           infos: dict[str, tuple], opset: int) -> dict[str, np.ndarray]:
    """The integer values a body computes from static shapes (Shape, then Div, Range, Concat...)
    that onnx's data propagation leaves unknown, so its Reshapes get known targets."""
    values = dict(values)
    folded = {}
    for proto in body:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for a in proto.attribute) or all(o in values for o in proto.output):
            continue
        if proto.op_type == "Shape":
            shape = infos.get(proto.input[0], (0, None))[1]
            if shape is None or not all(isinstance(d, int) for d in shape):
                continue
            attrs = {a.name: a.i for a in proto.attribute}
            result = [np.asarray(shape[attrs.get("start", 0):attrs.get("end", len(shape))],
                                 np.int64)]
        elif proto.op_type == "Constant":
            value = _constant(proto)
            if value is None or value.dtype.kind not in "iub":
                continue
            result = [value]
        else:
            reads = [values.get(i) for i in proto.input if i]
            if proto.op_type in RANDOM or any(v is None or v.dtype.kind not in "iub"
                                               for v in reads):
                continue
            result = _evaluate(proto, values, opset)
            if result is None or any(r.dtype.kind not in "iub" or r.size > 4096 for r in result):
                continue
        for name, value in zip(proto.output, result, strict=False):
            values[name] = folded[name] = value
    return folded


RANDOM = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Bernoulli",
          "Multinomial"}


def _evaluate(proto: onnx.NodeProto, values: dict[str, np.ndarray],
              opset: int) -> list[np.ndarray] | None:
    from onnx.reference import ReferenceEvaluator

    try:
        feeds = {i: values[i] for i in proto.input if i}
        inputs = [helper.make_tensor_value_info(i, helper.np_dtype_to_tensor_dtype(v.dtype),
                                                v.shape) for i, v in feeds.items()]
        graph = helper.make_graph([proto], "fold", inputs,
                                  [helper.make_tensor_value_info(o, 0, None) for o in proto.output])
        return [np.asarray(r) for r in ReferenceEvaluator(graph, opsets={"": opset})
                .run(None, feeds)]
    except Exception:  # noqa: BLE001 -- an op the evaluator cannot fold stays unknown
        return None


def differentiate_body(node: Node, dy, b: GraphBuilder, body: list[onnx.NodeProto],
                       renamed: dict[str, str]) -> list[str | None]:
    """The reverse pass over `body`, which recomputes `node`'s outputs (as `renamed[output]`)
    from its inputs; returns one gradient per node input, as a rule does."""
    float_type = b.float_type
    _typed_tensors(body, node, b)
    b.nodes.extend(body)
    reach = {i for i in node.inputs if b.needs(i)}
    inner = [Node.from_proto(p) for p in body]
    for n in inner:  # an If/Scan that reads a reached tensor inside its subgraph is reached too
        if any(i in reach for i in [*n.inputs, *n.implicit] if i):
            # An output of unknown type might be float: counted as reached, as the walker does.
            reach.update(o for o in n.outputs if o and b.value_info.get(o, (0,))[0] in
                         (*FLOAT_ELEM_TYPES, onnx.TensorProto.UNDEFINED))
    adjoints = {renamed[o]: [g] for o, g in zip(node.outputs, dy, strict=False) if o and g}
    b.differentiable |= reach

    def total(name: str) -> str | None:
        parts = adjoints.get(name)
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else b.op("Sum", *parts)

    for n in reversed(inner):
        grads_out = [total(o) if o else None for o in n.outputs]
        if all(g is None for g in grads_out) or \
                not any(i in reach for i in [*n.inputs, *n.implicit] if i):
            continue
        if n.op_type not in RULES or n.domain not in ("", "ai.onnx"):
            raise ValueError(f"its function body uses {n.op_type}, which has no gradient rule")
        b.enter(n)
        for name, g in zip(n.inputs, RULES[n.op_type](n, grads_out, b), strict=False):
            if g is not None and name in reach:
                adjoints.setdefault(name, []).append(g)
    b.float_type = float_type
    grads, seen = [], set()
    for name in node.inputs:
        grads.append(total(name) if name and name not in seen and b.needs(name) else None)
        seen.add(name)
    return grads


class Body:
    """A decomposition written by a rule (an unrolled LSTM, LpPool as a sum of powers): nodes
    with fresh names, ready for `differentiate_body`."""

    def __init__(self, b: GraphBuilder):
        self.b = b
        self.nodes: list[onnx.NodeProto] = []

    def op(self, op_type: str, *inputs: str | None, outputs: int = 1, **attrs) -> str | list[str]:
        names = [self.b.fresh(f"{op_type}_body") for _ in range(outputs)]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(helper.make_node(op_type, [i or "" for i in inputs], names, **attrs))
        return names[0] if outputs == 1 else names


@rule("MeanVarianceNormalization", "GroupNormalization", "CenterCropPad",
      "NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss", "CausalConvWithState",
      "Attention", "LinearAttention")
def by_function_body(node: Node, dy, b: GraphBuilder):
    body, renamed = inline_body(node, b)
    return differentiate_body(node, dy, b, body, renamed)
