"""ONNX Runtime's attention fusions (com.microsoft) as standard ops (see intake/unfuse.py).

Scaled dot-product attention (Vaswani et al. 2017, eq. 1) per head: softmax(Q·Kᵀ·scale +
mask) · V, with scale = 1/√head_size unless given, and ONNX Runtime's additive mask: keys the
mask hides get `mask_filter_value` (−10000) added, as its kernels do, and so do future keys
under `unidirectional`.
- Attention: Q, K, V from one projection input·W + bias, split by qkv_hidden_sizes; masks:
  none, key lengths (N), raw 0/1 (N×L) or (N×S×L); an attention_bias is added.
- MultiHeadAttention: separate 3-d query, key, value (+ the concatenated bias), the key
  padding mask in the same forms, an attention_bias.
- RotaryEmbedding: unlike opset 23's, its inputs are (input, position_ids, cos, sin) and a
  1-element position_ids is the first position (positions offset … offset+S-1).
Left as they are (and refused in one line later): a past state or present output, packed
QKV, rotary inside Attention, key-range masks (2N) and 4-d masks.
"""

from __future__ import annotations

import math

import onnx
from onnx import TensorProto

from onnxpath.intake.unfuse_writer import Nodes, Writer, attrs_of, given, output

ATTENTION = ("Attention", "MultiHeadAttention", "RotaryEmbedding")


def _heads(n: Nodes, x: str, heads: int, size: int, keys: bool = False) -> str:
    """N×S×(heads·size) → N×heads×S×size (keys: N×heads×size×S)."""
    split = n.op("Reshape", x, n.ints([0, 0, heads, size]))
    return n.op("Transpose", split, perm=[0, 2, 3, 1] if keys else [0, 2, 1, 3])


def _key_mask(n: Nodes, mask: str, rank: int, keys_of: str, filter_value: float) -> str | None:
    """The additive mask, broadcastable to N×heads×S×L, from key lengths (rank 1) or a 0/1
    mask (rank 2: N×L, rank 3: N×S×L)."""
    if rank == 1:
        positions = n.arange(n.length(keys_of, 1))
        lengths = n.unsqueeze(n.op("Cast", mask, to=TensorProto.INT64), [1])
        hidden = n.op("Not", n.op("Less", positions, lengths))
    elif rank in (2, 3):
        hidden = n.op("Not", n.op("Greater", n.op("Cast", mask, to=n.elem), n.const(0.0)))
    else:
        return None
    additive = n.op("Mul", n.op("Cast", hidden, to=n.elem), n.const(filter_value))
    return n.unsqueeze(additive, [1, 2] if rank < 3 else [1])


def _causal(n: Nodes, queries_of: str, filter_value: float) -> str:
    """filter_value above the diagonal (key j after query i), S×S."""
    positions = n.arange(n.length(queries_of, 1))
    later = n.op("Greater", n.unsqueeze(positions, [0]), n.unsqueeze(positions, [1]))
    return n.op("Mul", n.op("Cast", later, to=n.elem), n.const(filter_value))


def _attend(n: Nodes, node: onnx.NodeProto, q: str, k: str, v: str, sizes: tuple[int, int],
            masks: list[str], out: str) -> None:
    attrs = attrs_of(node)
    heads = attrs["num_heads"]
    qk_size, v_size = sizes[0] // heads, sizes[1] // heads
    scale = attrs.get("scale", 0.0) or 1 / math.sqrt(qk_size)
    scores = n.op("Mul", n.op("MatMul", _heads(n, q, heads, qk_size),
                              _heads(n, k, heads, qk_size, keys=True)), n.const(scale))
    for mask in masks:
        scores = n.op("Add", scores, mask)
    weights = n.op("Softmax", scores, axis=-1)
    mixed = n.op("Transpose", n.op("MatMul", weights, _heads(n, v, heads, v_size)),
                 perm=[0, 2, 1, 3])
    n.op("Reshape", mixed, n.ints([0, 0, sizes[1]]), out=out)


def _masks(n: Nodes, node: onnx.NodeProto, mask: str | None, bias: str | None,
           queries_of: str, keys_of: str) -> list[str] | None:
    attrs = attrs_of(node)
    filter_value = attrs.get("mask_filter_value", -10000.0)
    masks = []
    if mask:
        rank = n.w.ranks.get(mask)
        additive = None if rank is None else _key_mask(n, mask, rank, keys_of, filter_value)
        if additive is None:
            return None
        masks.append(additive)
    if bias:
        masks.append(bias)
    if attrs.get("unidirectional", 0):
        masks.append(_causal(n, queries_of, filter_value))
    return masks


def _attention(w: Writer, node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
    """Inputs: input, weights, bias, mask_index, past, attention_bias, past_sequence_length."""
    attrs = attrs_of(node)
    weights = next((t for t in w.initial if t.name == given(node, 1)), None)
    if given(node, 4) or output(node, 1) or attrs.get("do_rotary", 0) or weights is None:
        return None
    total = weights.dims[-1]
    sizes = list(attrs.get("qkv_hidden_sizes", [])) or [total // 3] * 3
    n = Nodes(w, node)
    projected = n.op("MatMul", node.input[0], node.input[1])
    if given(node, 2):
        projected = n.op("Add", projected, node.input[2])
    q, k, v = n.split(projected, sizes, -1)
    masks = _masks(n, node, given(node, 3), given(node, 5), node.input[0], node.input[0])
    if masks is None:
        return None
    _attend(n, node, q, k, v, (sizes[0], sizes[2]), masks, node.output[0])
    return n.nodes


def _multi_head(w: Writer, node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
    """Inputs: query, key, value, bias, key_padding_mask, attention_bias, past_key,
    past_value, …"""
    q, k, v = given(node, 0), given(node, 1), given(node, 2)
    ranks = [w.ranks.get(t) for t in (q, k, v)]
    if not (k and v) or ranks != [3, 3, 3] or any(given(node, i) for i in range(6, 10)) \
            or output(node, 1) or output(node, 2):
        return None
    bias = given(node, 3)
    widths = [w.dims.get(t, [None])[-1] for t in (q, k, v)]
    if None in widths:
        return None
    n = Nodes(w, node)
    if bias:
        parts = n.split(bias, widths, 0)
        q, k, v = (n.op("Add", t, b) for t, b in zip((q, k, v), parts, strict=True))
    masks = _masks(n, node, given(node, 4), given(node, 5), node.input[0], node.input[1])
    if masks is None:
        return None
    _attend(n, node, q, k, v, (widths[0], widths[2]), masks, node.output[0])
    return n.nodes


def _rotary(w: Writer, node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
    """Inputs: input (N×S×D or N×heads×S×H), position_ids (N×S, or one offset), cos and sin
    caches (positions × rotary_dim/2)."""
    x, positions, cos, sin = node.input[:4]
    rank, attrs = w.ranks.get(x), attrs_of(node)
    half = w.dims.get(cos, [None, None])[-1]
    width = w.dims.get(x, [None])[-1]
    if rank not in (3, 4) or not isinstance(half, int) or not isinstance(width, int) \
            or attrs.get("is_packed_batching", 0) or w.ranks.get(positions) is None:
        return None
    n = Nodes(w, node)
    if w.ranks[positions] == 1:  # the first position: offset + 0 … S-1
        start = n.op("Cast", positions, to=TensorProto.INT64)
        seq_axis = 1 if rank == 3 else 2
        positions = n.unsqueeze(n.op("Add", n.arange(n.length(x, seq_axis)), start), [0])
    cos, sin = (n.op("Gather", c, positions, axis=0) for c in (cos, sin))  # N×S×half
    heads = attrs.get("num_heads", 0)
    head = width if rank == 4 else width // heads if heads else 2 * half
    rows = x
    if rank == 4:
        cos, sin = (n.unsqueeze(c, [1]) for c in (cos, sin))
    else:
        rows = n.op("Reshape", x, n.ints([0, 0, width // head, head]))
        cos, sin = (n.unsqueeze(c, [2]) for c in (cos, sin))
    rotated = attrs.get("rotary_embedding_dim", 0) or 2 * half
    passed = None
    if rotated < head:
        rows, passed = n.split(rows, [rotated, head - rotated], -1)
    if attrs.get("interleaved", 0):  # pairs (x0, x1), (x2, x3), …
        pairs = n.op("Reshape", rows, n.ints([0, 0, 0, rotated // 2, 2]))
        x1, x2 = (n.op("Reshape", p, n.ints([0, 0, 0, rotated // 2]))
                  for p in n.split(pairs, [1, 1], -1))
    else:
        x1, x2 = n.split(rows, [rotated // 2, rotated // 2], -1)
    real = n.op("Sub", n.op("Mul", x1, cos), n.op("Mul", x2, sin))
    imaginary = n.op("Add", n.op("Mul", x1, sin), n.op("Mul", x2, cos))
    last = None if passed is not None or rank == 3 else node.output[0]
    if attrs.get("interleaved", 0):
        stacked = n.op("Concat", n.unsqueeze(real, [-1]), n.unsqueeze(imaginary, [-1]), axis=-1)
        out = n.op("Reshape", stacked, n.ints([0, 0, 0, rotated]), out=last)
    else:
        out = n.op("Concat", real, imaginary, axis=-1, out=last)
    if passed is not None:
        out = n.op("Concat", out, passed, axis=-1, out=None if rank == 3 else node.output[0])
    if rank == 3:
        n.op("Reshape", out, n.ints([0, 0, width]), out=node.output[0])
    return n.nodes


def unfuse_attention(w: Writer, node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
    return {"Attention": _attention, "MultiHeadAttention": _multi_head,
            "RotaryEmbedding": _rotary}[node.op_type](w, node)
