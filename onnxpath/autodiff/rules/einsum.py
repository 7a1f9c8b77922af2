"""Einsum. The gradient of one operand is itself an einsum: of the upstream gradient with every
other operand, written out to that operand's subscripts. A subscript the operand alone carries
(summed away by the forward pass) comes back by broadcasting.
"""

from __future__ import annotations

import numpy as np

from onnxpath.autodiff.builder import GraphBuilder, Node
from onnxpath.autodiff.rules import rule

ELLIPSIS = "..."


def parse(equation: str, operands: int) -> tuple[list[str], str]:
    """(input subscripts, output subscripts); the implicit form's output is the ellipsis then
    the letters used once, alphabetically (numpy's rule, which ONNX follows)."""
    equation = equation.replace(" ", "")
    lhs, _, rhs = equation.partition("->")
    terms = lhs.split(",")
    if len(terms) != operands:
        raise ValueError(f"Einsum equation '{equation}' names {len(terms)} operands")
    if "->" not in equation:
        letters = "".join(terms).replace(ELLIPSIS, "")
        once = sorted(c for c in set(letters) if letters.count(c) == 1)
        rhs = (ELLIPSIS if any(ELLIPSIS in t for t in terms) else "") + "".join(once)
    return terms, rhs


def _tokens(term: str) -> list[str]:
    """Subscripts one by one, the ellipsis as one token."""
    head, ellipsis, tail = term.partition(ELLIPSIS)
    return [*head, *([ELLIPSIS] if ellipsis else []), *tail]


def _axis(tokens: list[str], position: int, rank: int) -> int:
    """The axis of x that token `position` names (those after an ellipsis count from the end)."""
    if ELLIPSIS in tokens and position > tokens.index(ELLIPSIS):
        return rank - (len(tokens) - position)
    return position


def _ellipsis_dims(b: GraphBuilder, name: str, term: str) -> tuple:
    shape = b.shape(name)
    tokens = _tokens(term)
    if shape is None:
        raise ValueError("Einsum with an ellipsis over an operand of unknown rank")
    start = tokens.index(ELLIPSIS)
    return tuple(shape[start:start + len(shape) - (len(tokens) - 1)])


def _sum_broadcast_ellipsis(b: GraphBuilder, g: str, x: str, term: str, kept: str,
                            node: Node, terms: list[str]) -> str:
    """The gradient's ellipsis dims are those of all operands broadcast together; sum the ones
    x broadcast (fewer dims, or size 1) back to x's own."""
    x_ellipsis = _ellipsis_dims(b, x, term)
    every = [_ellipsis_dims(b, i, t) for i, t in zip(node.inputs, terms, strict=True)
             if ELLIPSIS in t]
    if not all(isinstance(d, int) for dims in every for d in dims):
        raise ValueError("Einsum broadcasting an ellipsis over dynamic dims")
    full = np.broadcast_shapes(*every)
    lead = len(full) - len(x_ellipsis)
    start = _tokens(kept).index(ELLIPSIS)
    axes = [start + i for i in range(lead)]
    axes += [start + lead + i for i, d in enumerate(x_ellipsis) if d == 1 and full[lead + i] != 1]
    if not axes:
        return g
    g = b.op("ReduceSum", g, b.ints(axes), keepdims=1)
    return b.op("Squeeze", g, b.ints(axes[:lead])) if lead else g


@rule("Einsum")
def einsum(node: Node, dy, b: GraphBuilder):
    terms, rhs = parse(node.attr("equation"), len(node.inputs))
    grads = []
    for k, (x, term) in enumerate(zip(node.inputs, terms, strict=True)):
        if not b.needs(x):
            grads.append(None)
            continue
        tokens = _tokens(term)
        letters = [t for t in tokens if t != ELLIPSIS]
        if len(set(letters)) != len(letters):
            raise NotImplementedError(f"Einsum with a repeated subscript in '{term}' (a diagonal)")
        if ELLIPSIS in tokens and ELLIPSIS not in rhs:
            raise NotImplementedError("Einsum that sums over the ellipsis dims")
        others = [t for i, t in enumerate(terms) if i != k]
        available = set(rhs).union(*others)
        kept = "".join(t for t in tokens if t == ELLIPSIS or t in available)
        equation = ",".join([rhs, *others]) + "->" + kept
        g = b.op("Einsum", dy[0], *[i for j, i in enumerate(node.inputs) if j != k],
                 equation=equation)
        if ELLIPSIS in tokens:
            g = _sum_broadcast_ellipsis(b, g, x, term, kept, node, terms)
        dropped = [p for p, t in enumerate(tokens) if t != ELLIPSIS and t not in available]
        if dropped:  # summed away by the forward pass: each of its elements counted the same
            rank = b.rank(x)
            axes = [_axis(tokens, p, rank) for p in dropped]
            g = b.op("Expand", b.op("Unsqueeze", g, b.ints(axes)), b.shape_of(x))
        grads.append(g)
    return grads
