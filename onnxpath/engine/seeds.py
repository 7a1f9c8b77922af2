"""Seeds computed inside the gradient graph: rewrites of a gradient graph's SEED input that the
engine needs for its own passes (the pathways' rewrites live in `onnxpath.pathways.surgery`)."""

from __future__ import annotations

import onnx
from onnx import helper

from onnxpath.autodiff.walk import SEED


def seed_from_cross_entropy(gradient_model: onnx.ModelProto, logits: str) -> onnx.ModelProto:
    """Make a gradient graph differentiate CE(target, softmax(logits)) per example.

    The seed input then carries the target distribution p: the rewrite feeds the backward pass
    with softmax(logits) - p, which is d CE / d logits, computed in the same run as the forward
    pass (a seed computed in numpy would need a second forward pass per step).
    """
    result = onnx.ModelProto()
    result.CopyFrom(gradient_model)
    derived = f"{SEED}/cross_entropy"
    nodes = [_copy(n) for n in result.graph.node]
    for node in nodes:
        node.input[:] = [derived if i == SEED else i for i in node.input]
    producer = next(i for i, n in enumerate(nodes) if logits in n.output)
    probs = helper.make_node("Softmax", [logits], [f"{derived}/softmax"], axis=-1,
                             name=f"{derived}/softmax_node")
    delta = helper.make_node("Sub", [probs.output[0], SEED], [derived], name=f"{derived}/node")
    nodes[producer + 1:producer + 1] = [probs, delta]
    del result.graph.node[:]
    result.graph.node.extend(nodes)
    return result


def seed_from_argmax(gradient_model: onnx.ModelProto, logits: str,
                     classes: int) -> onnx.ModelProto:
    """Make a gradient graph pick its own target: the seed becomes the one-hot of each row's
    argmax, computed from the logits of the same run. Attributing the predicted class then
    costs one forward+backward run instead of a forward run to find the class and a second
    forward+backward run (ResNet-50 on 2 cores: about 95 ms instead of 130 ms per image).
    The SEED input is removed."""
    result = onnx.ModelProto()
    result.CopyFrom(gradient_model)
    graph = result.graph
    kept = [i for i in graph.input if i.name != SEED]
    del graph.input[:]
    graph.input.extend(kept)
    prefix = f"{SEED}/argmax"
    nodes = [_copy(n) for n in graph.node]
    producer = next(i for i, n in enumerate(nodes) if logits in n.output)
    depth = helper.make_tensor(f"{prefix}/depth", onnx.TensorProto.INT64, [], [classes])
    # The one-hot takes the logits' type (float16 logits need a float16 seed; SEED's type).
    seed_type = next(i for i in gradient_model.graph.input if i.name == SEED) \
        .type.tensor_type.elem_type
    # ONNX Runtime has no float64 OneHot: a float64 model's one-hot is made in float32 and
    # cast (0 and 1 are exact in every float type).
    made_type = onnx.TensorProto.FLOAT if seed_type == onnx.TensorProto.DOUBLE else seed_type
    values = helper.make_tensor(f"{prefix}/values", made_type, [2], [0.0, 1.0])
    one_hot = SEED if made_type == seed_type else f"{prefix}/one_hot_float"
    added = [
        helper.make_node("ArgMax", [logits], [f"{prefix}/index"], axis=-1, keepdims=0,
                         select_last_index=0, name=f"{prefix}/argmax_node"),
        helper.make_node("Constant", [], [depth.name], value=depth, name=f"{prefix}/depth_node"),
        helper.make_node("Constant", [], [values.name], value=values,
                         name=f"{prefix}/values_node"),
        helper.make_node("OneHot", [f"{prefix}/index", depth.name, values.name], [one_hot],
                         axis=-1, name=f"{prefix}/one_hot"),
    ]
    if one_hot != SEED:
        added.append(helper.make_node("Cast", [one_hot], [SEED], to=seed_type,
                                      name=f"{prefix}/cast"))
    nodes[producer + 1:producer + 1] = added
    del graph.node[:]
    graph.node.extend(nodes)
    return result


def _copy(node: onnx.NodeProto) -> onnx.NodeProto:
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    return copy
