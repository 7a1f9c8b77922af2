"""Scan and Loop, unrolled: when the number of iterations is known after shape inference, the
body is copied once per iteration (its tensors renamed apart) and the copies are differentiated
like any other graph. An If on a constant condition never reaches the walker: normalise()
folds it to the branch taken.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from onnxpath.autodiff.builder import GraphBuilder, Node
from onnxpath.autodiff.rules import rule
from onnxpath.autodiff.rules.functions import Body, differentiate_body, rename_tensors

MAX_UNROLLED = 4096  # iterations; past that the graph would be larger than it is worth


def _refuse_outer_reads(node: Node, b: GraphBuilder) -> None:
    """A body that reads a differentiated tensor from the outer scope would need a gradient for
    a tensor that is not among the node's inputs: refused rather than dropped."""
    read = [name for name in node.implicit if b.needs(name)]
    if read:
        raise NotImplementedError(f"{node.op_type} whose body reads '{read[0]}' from the outer "
                                  "scope on the differentiated path")


def _iteration(body: Body, graph: onnx.GraphProto, inputs: list[str]) -> list[str]:
    """Copy `graph` once, reading `inputs` for its inputs; return the copy's output names."""
    b = body.b
    renamed = {value.name: name for value, name in zip(graph.input, inputs, strict=True)}
    for init in graph.initializer:
        value = numpy_helper.to_array(init)
        renamed[init.name] = b.const(value, dtype=value.dtype)
    nodes = [onnx.NodeProto() for _ in graph.node]
    for copy, original in zip(nodes, graph.node, strict=True):
        copy.CopyFrom(original)
        copy.name = ""
        for o in copy.output:
            if o:
                renamed[o] = b.fresh("iteration")
    rename_tensors(nodes, renamed)
    body.nodes.extend(nodes)
    produced = {o for n in nodes for o in n.output}
    outputs = []
    for value in graph.output:  # an input or outer tensor passed through gets its own name
        name = renamed.get(value.name, value.name)
        outputs.append(name if name in produced else body.op("Identity", name))
    return outputs


def _stack(body: Body, b: GraphBuilder, parts: list[str], axis: int) -> str:
    unsqueezed = [body.op("Unsqueeze", p, b.ints([axis])) for p in parts]
    return unsqueezed[0] if len(unsqueezed) == 1 else body.op("Concat", *unsqueezed, axis=axis)


@rule("Scan")
def scan(node: Node, dy, b: GraphBuilder):
    _refuse_outer_reads(node, b)
    graph = node.attr("body")
    scans = node.attr("num_scan_inputs")
    states = len(node.inputs) - scans
    scan_inputs = node.inputs[states:]
    in_axes = list(node.attr("scan_input_axes") or [0] * scans)
    in_reverse = list(node.attr("scan_input_directions") or [0] * scans)
    outs = len(graph.output) - states
    out_axes = list(node.attr("scan_output_axes") or [0] * outs)
    out_reverse = list(node.attr("scan_output_directions") or [0] * outs)
    shape = b.shape(scan_inputs[0])
    length = shape[in_axes[0] % len(shape)] if shape else None
    if not isinstance(length, int) or length > MAX_UNROLLED:
        raise ValueError(f"Scan over {length} iterations: its length must be known (at most "
                         f"{MAX_UNROLLED}) to unroll it")
    body = Body(b)
    carried = list(node.inputs[:states])
    collected = [[] for _ in range(outs)]
    for t in range(length):
        slices = []
        for x, axis, reverse in zip(scan_inputs, in_axes, in_reverse, strict=True):
            at = length - 1 - t if reverse else t
            slices.append(body.op("Gather", x, b.const(np.asarray(at, np.int64)),
                                  axis=axis % b.rank(x)))
        results = _iteration(body, graph, [*carried, *slices])
        carried = results[:states]
        for k, r in enumerate(results[states:]):
            collected[k].append(r)
    finals = list(carried)
    for k in range(outs):
        parts = collected[k][::-1] if out_reverse[k] else collected[k]
        axis = out_axes[k]
        if axis < 0:
            axis %= b.rank(node.outputs[states + k])
        finals.append(_stack(body, b, parts, axis))
    renamed = {o: f for o, f in zip(node.outputs, finals, strict=True) if o}
    return differentiate_body(node, dy, b, body.nodes, renamed)


def _always_true(graph: onnx.GraphProto) -> bool:
    """Whether the body hands its condition input straight back (a for loop)."""
    cond_in, cond_out = graph.input[1].name, graph.output[0].name
    if cond_out == cond_in:
        return True
    producer = next((n for n in graph.node if cond_out in n.output), None)
    return producer is not None and producer.op_type == "Identity" and \
        producer.input[0] == cond_in


@rule("Loop")
def loop(node: Node, dy, b: GraphBuilder):
    _refuse_outer_reads(node, b)
    graph = node.attr("body")
    trips = b.constant_value(node.input(0))
    condition = b.constant_value(node.input(1))
    if trips is None:
        raise ValueError("Loop whose trip count is computed at run time")
    if (node.input(1) and (condition is None or not bool(condition))) or \
            not _always_true(graph):
        raise NotImplementedError("Loop with a condition computed at run time")
    trips = int(trips)
    if trips > MAX_UNROLLED:
        raise ValueError(f"Loop of {trips} iterations (at most {MAX_UNROLLED} are unrolled)")
    body = Body(b)
    carried = list(node.inputs[2:])
    true = b.const(np.asarray(True))
    collected: list[list[str]] = []
    for i in range(trips):
        results = _iteration(body, graph, [b.const(np.asarray(i, np.int64)), true, *carried])
        carried = results[1:1 + len(carried)]
        scanned = results[1 + len(carried):]
        collected = collected or [[] for _ in scanned]
        for k, r in enumerate(scanned):
            collected[k].append(r)
    if trips == 0:
        raise ValueError("Loop of zero iterations")
    finals = [*carried, *(_stack(body, b, parts, 0) for parts in collected)]
    renamed = {o: f for o, f in zip(node.outputs, finals, strict=True) if o}
    return differentiate_body(node, dy, b, body.nodes, renamed)

