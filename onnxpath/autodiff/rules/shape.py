"""Ops that only move elements around: the gradient moves them back."""

from __future__ import annotations

from ..builder import GraphBuilder, Node
from . import rule


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
    axis = node.attr("axis")
    rank = b.rank(node.outputs[0])
    axis = axis % rank
    sizes = [b.shape(i)[axis] for i in node.inputs]
    if not all(isinstance(s, int) for s in sizes):
        raise ValueError(f"Concat along a dynamic axis ({sizes})")
    if len(sizes) == 1:
        return [dy[0]]
    parts = b.op("Split", dy[0], b.ints(sizes), axis=axis, outputs=len(sizes))
    return [p if b.needs(i) else None for p, i in zip(parts, node.inputs, strict=True)]
