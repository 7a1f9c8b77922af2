"""The contribution pathway in one ONNX Runtime run: scoring, the global percentile and the
masked gradient in a single graph, so that a GPU never waits on the host between them.

The host route (`critical_pathway`, then `pathway_gradient`) runs the tap graph, copies every
score to the host (38 MB for ResNet-50), selects there and copies 38 MB of gates back for the
second run. Here the tap graph's scores flow on in the same graph:

    |a * dy/da| per layer -> one (N, neurons) row per example -> TopK -> t -> keep = s > t
    -> gates (0 / -inf) for the Relu layers, 0/1 masks for the others -> the gated graph's
    forward and backward pass -> d logit / d x

The keep masks equal the host's exactly. With lo = floor(P/100 * (n - 1)) and s_(k) the
scores in ascending order, numpy's percentile t lies in [s_(lo), s_(lo+1)) (or is s_(lo)),
and no score lies strictly between the two, so `s > t` keeps the same neurons as
`s > s_(lo)`; when more than P% of the scores are 0, s_(lo) is 0 and so is t. s_(lo) is the
smallest of the n - lo largest scores, or the largest of the lo + 1 smallest: one TopK with
the smaller k.

One exception, on the CPU only: for a float16 model ONNX Runtime computes the contribution
product in float32 and, inside one graph, passes it on without the float16 rounding that a graph
output gets, so a score can differ from the host route's in its last float16 bit and a neuron
tied at the threshold can flip (1 of 2560 in the tests).

ONNX Runtime's CPU TopK over ResNet-50's 9.6 M scores takes ~130 ms, the host's bracketing
selection 15-30 ms, so the CPU keeps the host route; CUDA (or ONNXPATH_PATHWAY_IN_GRAPH=1)
takes this one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper

from onnxpath.autodiff import SEED
from onnxpath.autodiff.walk import grad_name
from onnxpath.engine.fixed_batch import fixed_rows, needs_chunks
from onnxpath.engine.seeds import seed_from_argmax
from onnxpath.pathways.surgery import MaskLayer, contribution_name, contribution_taps, gate_name

PREFIX = "onnxpath_in_graph/"
KEPT = PREFIX + "kept"  # (N,) int64: neurons kept per example
FLOAT = onnx.TensorProto.FLOAT


def wanted(device: str) -> bool:
    """Whether the pathway runs in one graph: on CUDA, unless ONNXPATH_PATHWAY_IN_GRAPH says."""
    forced = os.environ.get("ONNXPATH_PATHWAY_IN_GRAPH")
    return forced == "1" if forced in ("0", "1") else device == "cuda"


def kth_rank(neurons: int, prune_percent: float) -> tuple[int, bool]:
    """(k, largest): the TopK that has s_(lo) at its edge (see the module docstring)."""
    lo = int(np.floor(prune_percent / 100.0 * (neurons - 1)))
    return (neurons - lo, True) if neurons - lo <= lo + 1 else (lo + 1, False)


def renamed(model: onnx.ModelProto, shared: set[str]) -> onnx.ModelProto:
    """`model` with every tensor and node name prefixed, except `shared`, so that it can sit
    beside another graph of the same model."""
    def name(value: str) -> str:
        return value if not value or value in shared else PREFIX + value

    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    for node in graph.node:
        node.input[:] = [name(i) for i in node.input]
        node.output[:] = [name(o) for o in node.output]
        node.name = PREFIX + node.name if node.name else ""
    for value in [*graph.input, *graph.output, *graph.value_info, *graph.initializer]:
        value.name = name(value.name)
    return result


def reduce(op: str, tensor: str, out: str, keepdims: int, opset: int) -> list[onnx.NodeProto]:
    """`op` over axis 1 in the model's opset: ReduceSum takes its axes as an input from
    opset 13, ReduceMin and ReduceMax from opset 18."""
    if opset >= (13 if op == "ReduceSum" else 18):
        return [helper.make_node("Constant", [], [out + "/axes"], name=out + "/axes",
                                 value=helper.make_tensor("a", onnx.TensorProto.INT64, [1],
                                                          [1])),
                helper.make_node(op, [tensor, out + "/axes"], [out], keepdims=keepdims,
                                 name=out)]
    return [helper.make_node(op, [tensor], [out], axes=[1], keepdims=keepdims, name=out)]


def selection_nodes(layers: Sequence[MaskLayer], prune_percent: float,
                    opset: int) -> list[onnx.NodeProto]:
    """From the tap graph's contribution outputs to each layer's gate (Relu) or mask (others),
    named as the renamed gated graph reads them, plus KEPT."""
    neurons = sum(layer.size for layer in layers)
    k, largest = kth_rank(neurons, prune_percent)
    nodes = [helper.make_node("Constant", [], [PREFIX + "rows"], name=PREFIX + "rows",
                              value=helper.make_tensor("rows", onnx.TensorProto.INT64, [2],
                                                       [0, -1])),
             helper.make_node("Constant", [], [PREFIX + "k"], name=PREFIX + "k",
                              value=helper.make_tensor("k", onnx.TensorProto.INT64, [1], [k]))]
    flat = []
    for layer in layers:
        score = contribution_name(layer.tensor)
        base = PREFIX + "score/" + layer.tensor
        if layer.dtype != np.float32:  # the host ranks float32 scores too
            nodes.append(helper.make_node("Cast", [score], [base + "/float"], to=FLOAT,
                                          name=base + "/cast"))
            score = base + "/float"
        nodes += [helper.make_node("Abs", [score], [base], name=base),
                  helper.make_node("Reshape", [base, PREFIX + "rows"], [base + "/flat"],
                                   name=base + "/flat")]
        flat.append(base + "/flat")
    edge = "ReduceMin" if largest else "ReduceMax"
    nodes += [helper.make_node("Concat", flat, [PREFIX + "scores"], axis=1,
                               name=PREFIX + "scores"),
              helper.make_node("TopK", [PREFIX + "scores", PREFIX + "k"],
                               [PREFIX + "top", PREFIX + "top_index"], axis=1,
                               largest=int(largest), sorted=0, name=PREFIX + "topk"),
              *reduce(edge, PREFIX + "top", PREFIX + "threshold", 1, opset)]
    counts = []
    for layer in layers:
        nodes += _gate(layer, opset)
        counts.append(PREFIX + "kept/" + layer.tensor)
    # int64 counts: Sum has no integer kernel, so one (N, layers) row each and one ReduceSum
    nodes.append(helper.make_node("Concat", counts, [PREFIX + "kept_per_layer"], axis=1,
                                  name=PREFIX + "kept_per_layer"))
    nodes += reduce("ReduceSum", PREFIX + "kept_per_layer", KEPT, 0, opset)
    return nodes


def _gate(layer: MaskLayer, opset: int) -> list[onnx.NodeProto]:
    """keep = |s| > t for one layer; its gate or mask, and its kept count."""
    base = PREFIX + "score/" + layer.tensor
    keep = PREFIX + "keep/" + layer.tensor
    shape = PREFIX + "threshold_shape/" + layer.tensor
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(layer.dtype))
    nodes = [helper.make_node("Constant", [], [shape], name=shape,
                              value=helper.make_tensor("s", onnx.TensorProto.INT64,
                                                       [len(layer.shape) + 1],
                                                       [-1] + [1] * len(layer.shape))),
             helper.make_node("Reshape", [PREFIX + "threshold", shape], [shape + "/t"],
                              name=shape + "/t"),
             helper.make_node("Greater", [base, shape + "/t"], [keep], name=keep),
             helper.make_node("Cast", [keep], [keep + "/count"], to=onnx.TensorProto.INT64,
                              name=keep + "/count"),
             helper.make_node("Reshape", [keep + "/count", PREFIX + "rows"],
                              [keep + "/rows"], name=keep + "/rows"),
             *reduce("ReduceSum", keep + "/rows", PREFIX + "kept/" + layer.tensor, 1, opset)]
    if layer.op_type == "Relu":
        zero, pruned = PREFIX + "zero/" + layer.tensor, PREFIX + "pruned/" + layer.tensor
        nodes += [helper.make_node("Constant", [], [zero], name=zero,
                                   value=helper.make_tensor("z", elem, [], [0.0])),
                  helper.make_node("Constant", [], [pruned], name=pruned,
                                   value=helper.make_tensor("p", elem, [], [-np.inf])),
                  helper.make_node("Where", [keep, zero, pruned],
                                   [PREFIX + gate_name(layer.tensor)],
                                   name=PREFIX + gate_name(layer.tensor))]
    else:
        nodes.append(helper.make_node("Cast", [keep], [PREFIX + layer.mask], to=elem,
                                      name=PREFIX + layer.mask))
    return nodes


def pathway_in_one_graph(tap: onnx.ModelProto, gated: onnx.ModelProto,
                         layers: Sequence[MaskLayer], prune_percent: float,
                         logits: str, wrt: str) -> onnx.ModelProto:
    """One graph from the tap graph (`contribution_taps`, with or without `seed_from_argmax`)
    and the gated graph's gradient with respect to `wrt` (`gate_relus`). Outputs: the original
    logits, PREFIX + logits (the pathway's), PREFIX + the gradient, and KEPT."""
    made = {o for node in tap.graph.node for o in node.output}
    present = {i.name for i in tap.graph.input} | made
    mine = {i.name: i for i in tap.graph.initializer}
    same = {i.name for i in gated.graph.initializer
            if i.name in mine and i == mine[i.name]}  # the model's own weights, held once
    masks = {gate_name(layer.tensor) if layer.op_type == "Relu" else layer.mask
             for layer in layers}
    shared = same | {i.name for i in gated.graph.input if i.name not in masks} | {SEED}
    second = renamed(gated, shared)
    opset = next((o.version for o in tap.opset_import if o.domain in ("", "ai.onnx")), 13)
    result = onnx.ModelProto()
    result.CopyFrom(tap)
    graph = result.graph
    graph.node.extend([*selection_nodes(layers, prune_percent, opset), *second.graph.node])
    graph.initializer.extend(i for i in second.graph.initializer if i.name not in same)
    graph.input.extend(i for i in second.graph.input
                       if not i.name.startswith(PREFIX) and i.name not in present)
    graph.value_info.extend(second.graph.value_info)
    typed = {o.name: o for o in [*tap.graph.output, *second.graph.output]}
    del graph.output[:]
    graph.output.extend([typed[logits], typed[PREFIX + logits], typed[PREFIX + grad_name(wrt)],
                         helper.make_tensor_value_info(KEPT, onnx.TensorProto.INT64, [None])])
    return result


def run_in_one_graph(net, x: np.ndarray, targets: Sequence[int] | None,
                     prune_percent: float) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                    np.ndarray]:
    """(maps, logits, the pathway's logits, kept neurons per example) in one run.
    `net` is a MaskedNetwork; `targets` None takes each example's predicted class."""
    base = net.base_engine
    tensors = tuple(layer.tensor for layer in net.layers)
    argmax = targets is None
    gated = net.gated()

    def build() -> onnx.ModelProto:
        tap = contribution_taps(base.gradient_model(tensors), tensors)
        if argmax:
            tap = seed_from_argmax(tap, base.info.logits, base.num_classes)
        return pathway_in_one_graph(tap, gated.gradient_model([net.input_name]), net.layers,
                                    prune_percent, base.info.logits, net.input_name)

    session = base.session_for(("pathway-in-one-graph", base.info.logits, tensors,
                                float(prune_percent), argmax), build)
    inputs = {base.input_name: base.as_input(x)}
    if not argmax:
        inputs[SEED] = base.seed(targets).astype(base.seed_dtype)
    wanted_inputs = {i.name for i in session.get_inputs()}
    inputs.update({k: v for k, v in base.context_feeds(len(x)).items() if k in wanted_inputs})
    names = [base.info.logits, PREFIX + base.info.logits,
             PREFIX + grad_name(net.input_name), KEPT]
    logits, masked, maps, kept = base.run(session, names, inputs)
    return maps, logits, masked, kept


def fits(net, x: np.ndarray, selection: str, prune_percent, per_layer: bool) -> bool:
    """Whether this call can take the one-graph route: the contribution selection at a fixed P
    over all layers, a batch the model takes as it is, and a graph without subgraphs (whose
    outer-scope names the renaming would miss)."""
    base = net.base_engine
    plain = selection == "contribution" and not per_layer and isinstance(prune_percent, float)
    return plain and not needs_chunks(fixed_rows(base.info.input_shape), len(x)) and not any(
        a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
        for node in base.info.proto.graph.node for a in node.attribute)
