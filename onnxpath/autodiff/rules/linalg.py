"""Matrix products. Gemm's transposes are folded into the backward Gemm's own flags."""

from __future__ import annotations

from onnxpath.autodiff.builder import GraphBuilder, Node
from onnxpath.autodiff.rules import rule


@rule("Gemm")
def gemm(node: Node, dy, b: GraphBuilder):
    a, w = node.inputs[0], node.inputs[1]
    c = node.input(2)
    alpha, beta = node.attr("alpha", 1.0), node.attr("beta", 1.0)
    trans_a, trans_b = node.attr("transA", 0), node.attr("transB", 0)
    g = dy[0]
    ga = gw = gc = None
    if b.needs(a):
        if trans_a:  # dA = alpha * B' dY^T
            ga = b.op("Gemm", w, g, alpha=alpha, transA=trans_b, transB=1)
        else:  # dA = alpha * dY B'^T
            ga = b.op("Gemm", g, w, alpha=alpha, transB=1 - trans_b)
    if b.needs(w):
        if trans_b:  # dB = alpha * dY^T A'
            gw = b.op("Gemm", g, a, alpha=alpha, transA=1, transB=trans_a)
        else:  # dB = alpha * A'^T dY
            gw = b.op("Gemm", a, g, alpha=alpha, transA=1 - trans_a)
    if c and b.needs(c):
        scaled = g if beta == 1.0 else b.op("Mul", g, b.scalar(beta))
        gc = b.unbroadcast(scaled, c, node.outputs[0])
    return [ga, gw, gc]


def _swap_last(b: GraphBuilder, x: str, rank: int) -> str:
    perm = list(range(rank))
    perm[-2], perm[-1] = perm[-1], perm[-2]
    return b.op("Transpose", x, perm=perm)


@rule("MatMul")
def matmul(node: Node, dy, b: GraphBuilder):
    # Promote 1-D operands to matrices as numpy does, differentiate, then reshape back.
    a, w = node.inputs
    a_shape, w_shape = list(b.shape(a)), list(b.shape(w))
    g, g_shape = dy[0], list(b.shape(node.outputs[0]))
    a2, w2 = a, w
    inserted = []  # axes of the promoted product that the 1-D operands dropped from the output
    if len(a_shape) == 1:
        a2, a_shape = b.op("Unsqueeze", a, b.ints([0])), [1, *a_shape]
        inserted.append(-2)
    if len(w_shape) == 1:
        w2, w_shape = b.op("Unsqueeze", w, b.ints([1])), [*w_shape, 1]
        inserted.append(-1)
    if inserted:
        g = b.op("Unsqueeze", g, b.ints(inserted))
        for axis in sorted(inserted):
            g_shape.insert(len(g_shape) + 1 + axis, 1)
    ga = gw = None
    if b.needs(a):
        full = b.op("MatMul", g, _swap_last(b, w2, len(w_shape)))
        full_shape = [*g_shape[:-1], a_shape[-1]]
        ga = b.reshape_like(b.sum_to(full, full_shape, a_shape, a), a)
    if b.needs(w):
        full = b.op("MatMul", _swap_last(b, a2, len(a_shape)), g)
        full_shape = [*g_shape[:-2], w_shape[-2], g_shape[-1]]
        gw = b.reshape_like(b.sum_to(full, full_shape, w_shape, w), w)
    return [ga, gw]
