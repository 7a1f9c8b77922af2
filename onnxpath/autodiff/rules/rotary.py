"""RotaryEmbedding (opset 23): each pair of features is rotated by an angle that depends on the
token's position. For fixed cos/sin caches the op is linear in x; the rule writes the rotation
out (Split, Mul, Sub, Add, Concat, as the spec defines it) and differentiates that.
"""

from __future__ import annotations

from onnxpath.autodiff.builder import GraphBuilder, Node
from onnxpath.autodiff.rules import rule
from onnxpath.autodiff.rules.functions import Body, differentiate_body


@rule("RotaryEmbedding")
def rotary_embedding(node: Node, dy, b: GraphBuilder):
    x, cos, sin = node.inputs[:3]
    if b.needs(cos) or b.needs(sin):
        raise NotImplementedError("RotaryEmbedding gradients with respect to its cos/sin caches")
    body = Body(b)
    if node.input(3):  # caches indexed by position: (max_position, rotary_dim / 2)
        cos = body.op("Gather", cos, node.inputs[3], axis=0)
        sin = body.op("Gather", sin, node.inputs[3], axis=0)
    rank, hidden = b.rank(x), b.static_shape(x)[-1]
    if rank == 4:  # (batch, heads, sequence, head_size)
        head, rows = hidden, x
        cos, sin = (body.op("Unsqueeze", c, b.ints([1])) for c in (cos, sin))
    else:  # (batch, sequence, heads * head_size)
        heads = node.attr("num_heads")
        head = hidden // heads
        rows = body.op("Reshape", x, b.ints([0, 0, heads, head]))
        cos, sin = (body.op("Unsqueeze", c, b.ints([2])) for c in (cos, sin))
    rotated = node.attr("rotary_embedding_dim", 0) or head
    half = rotated // 2
    passed = None
    if rotated < head:
        rows, passed = body.op("Split", rows, b.ints([rotated, head - rotated]), outputs=2,
                               axis=-1)
    if node.attr("interleaved", 0):  # pairs (x0, x1), (x2, x3), ...
        pairs = body.op("Reshape", rows, b.ints([0, 0, 0, half, 2]))
        x1, x2 = (body.op("Squeeze", p, b.ints([-1])) for p in
                  body.op("Split", pairs, b.ints([1, 1]), outputs=2, axis=-1))
    else:  # halves (x0..x_{h-1}), (x_h..)
        x1, x2 = body.op("Split", rows, b.ints([half, half]), outputs=2, axis=-1)
    real = body.op("Sub", body.op("Mul", cos, x1), body.op("Mul", sin, x2))
    imaginary = body.op("Add", body.op("Mul", sin, x1), body.op("Mul", cos, x2))
    if node.attr("interleaved", 0):
        stacked = body.op("Concat", body.op("Unsqueeze", real, b.ints([-1])),
                          body.op("Unsqueeze", imaginary, b.ints([-1])), axis=-1)
        out = body.op("Reshape", stacked, b.ints([0, 0, 0, rotated]))
    else:
        out = body.op("Concat", real, imaginary, axis=-1)
    if passed is not None:
        out = body.op("Concat", out, passed, axis=-1)
    if rank == 3:
        out = body.op("Reshape", out, b.ints([0, 0, hidden]))
    return differentiate_body(node, dy, b, body.nodes, {node.outputs[0]: out})
