"""Ops that only move elements around: the gradient moves them back."""

from __future__ import annotations

from onnxpath.autodiff.builder import GraphBuilder, Node
from onnxpath.autodiff.rules import rule


@rule("Identity", "Dropout")
def identity(node: Node, dy, b: GraphBuilder):
    return [dy[0]]


@rule("Flatten", "Reshape", "Squeeze", "Unsqueeze")
def reshape(node: Node, dy, b: GraphBuilder):
    return [b.reshape_like(dy[0], node.inputs[0])]


@rule("Transpose")
def transpose(node: Node, dy, b: GraphBuilder):
    perm = node.attr("perm") or list(reversed(range(b.rank(node.inputs[0]))))
    inverse = [0] * len(perm)
    for i, p in enumerate(perm):
        inverse[p] = i
    return [b.op("Transpose", dy[0], perm=inverse)]


@rule("Concat")
def concat(node: Node, dy, b: GraphBuilder):
    if len(node.inputs) == 1:
        return [dy[0]]
    axis = node.attr("axis") % b.rank(node.outputs[0])
    sizes = [(b.shape(i) or [None] * (axis + 1))[axis] for i in node.inputs]
    if all(isinstance(s, int) for s in sizes):
        split = b.ints(sizes)
    else:  # sizes shape inference could not settle: read them at run time
        split = b.op("Concat", *(b.op("Shape", i, start=axis, end=axis + 1)
                                 for i in node.inputs), axis=0)
    parts = b.op("Split", dy[0], split, axis=axis, outputs=len(sizes))
    return [p if b.needs(i) else None for p, i in zip(parts, node.inputs, strict=True)]
