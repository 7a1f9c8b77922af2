"""Fold the shape arithmetic of exported graphs into constants, before differentiation.

Exporters compute slice bounds, reshape targets and even control flow from `Shape(x)` at run
time (torch's `chunk`, `LocalResponseNorm`, `view(x.size(0), -1)`). Once normalise() has fixed
the input's dims, most of those values are known. onnx shape inference cannot always see
through them (it has no data propagation for Div, nor for If), and gradient rules need static
shapes and constant bounds. So: evaluate every node whose inputs are known small constants or
static shapes, and inline an If whose condition became constant.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from onnxpath.autodiff.walk import value_infos

SMALL = 4096  # elements; shape arithmetic is far below this, weights far above
NOT_FOLDED = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
              "Multinomial", "Bernoulli", "Loop", "Scan", "If"}


def fold_shape_arithmetic(model: onnx.ModelProto, passes: int = 8) -> onnx.ModelProto:
    """A copy of `model` with every foldable node replaced by a Constant (repeated until
    nothing changes, because folding one value lets shape inference settle the next)."""
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    for _ in range(passes):
        if not _fold_once(folded):
            break
    return folded


def _static_shape(shape, node: onnx.NodeProto) -> np.ndarray | None:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if shape is None:
        return None
    dims = list(shape)[attrs.get("start", 0):attrs.get("end", len(shape))]
    if not all(isinstance(d, int) and d > 0 for d in dims):
        return None
    return np.asarray(dims, np.int64)


def _fold_once(model: onnx.ModelProto) -> bool:
    graph = model.graph
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    infos = value_infos(model)
    # Weights left in external data are never shape arithmetic: skip them unread.
    known = {i.name: numpy_helper.to_array(i) for i in graph.initializer
             if int(np.prod(i.dims)) <= SMALL
             and i.data_location != onnx.TensorProto.EXTERNAL}
    shapes = {}  # Shape outputs whose dims are only partly static: the inferred dims
    kept, changed = [], False
    for node in graph.node:
        values = None
        if node.op_type == "Constant":
            if node.attribute[0].name == "value":
                known[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Shape":
            shape = infos.get(node.input[0], (0, None))[1]
            values = [_static_shape(shape, node)]
            if values[0] is None:
                values = None
                if shape is not None:
                    shapes[node.output[0]] = shape
        elif node.op_type == "If" and node.input[0] in known:
            kept.extend(_inline(node, bool(np.asarray(known[node.input[0]]).reshape(-1)[0])))
            changed = True
            continue
        elif node.op_type == "Gather" and node.input[0] in shapes and node.input[1] in known:
            dims = np.asarray(shapes[node.input[0]], dtype=object)[known[node.input[1]]]
            if all(isinstance(d, int) for d in np.ravel(dims)):
                values = [np.asarray(dims, np.int64)]
        elif node.domain in ("", "ai.onnx") and node.op_type not in NOT_FOLDED and \
                all(i in known for i in node.input if i) and \
                not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                        for a in node.attribute):
            feeds = {i: known[i] for i in node.input if i}
            values = ReferenceEvaluator(node, opsets={"": opset}).run(None, feeds)
            if any(np.asarray(v).size > SMALL for v in values):
                values = None
        if values is None:
            kept.append(node)
            continue
        changed = True
        for name, value in zip(node.output, values, strict=False):
            if name:
                array = np.asarray(value)
                known[name] = array
                kept.append(helper.make_node("Constant", [], [name],
                                             value=numpy_helper.from_array(array, name)))
    if changed:
        del graph.node[:]
        graph.node.extend(kept)
    return changed


def _inline(node: onnx.NodeProto, condition: bool) -> list[onnx.NodeProto]:
    """The nodes of the branch an If takes, its outputs renamed to the If's own."""
    branch = next(helper.get_attribute_value(a) for a in node.attribute
                  if a.name == ("then_branch" if condition else "else_branch"))
    nodes = list(branch.node)
    for init in branch.initializer:
        nodes.insert(0, helper.make_node("Constant", [], [init.name], value=init))
    nodes += [helper.make_node("Identity", [out.name], [name])
              for out, name in zip(branch.output, node.output, strict=True)]
    return nodes
