"""ONNX Runtime's layer-normalisation fusions as standard ops (see intake/unfuse.py).

- LayerNormalization in a model of opset < 17: ONNX Runtime's own (default-domain) version 1;
- SimplifiedLayerNormalization (RMSNorm): x / √(mean(x²) + ε) · γ;
- SkipLayerNormalization / SkipSimplifiedLayerNormalization (com.microsoft): the same of
  input + skip (+ bias), whose sum is also output 3;
- EmbedLayerNormalization (com.microsoft): LayerNorm of word[ids] + position[pos] (+ segment
  [segment ids]), with the sequence lengths of the mask as output 1. The word lookup is
  written as a Gather fed by the token-id graph input itself (ONNX Runtime's int32 Cast
  skipped), so the text adapter finds the word embedding again (intake/wrt.py).
The mean and inverse standard deviation outputs are rebuilt only by LayerNormalization
(opset ≥ 17); a node whose other such outputs are used is left (and refused later).
"""

from __future__ import annotations

import onnx
from onnx import TensorProto

from onnxpath.intake.unfuse_writer import MS, Nodes, Writer, attrs_of, given, output

NORMS = {("", "LayerNormalization"), ("", "SimplifiedLayerNormalization"),
         (MS, "SimplifiedLayerNormalization"), (MS, "SkipLayerNormalization"),
         (MS, "SkipSimplifiedLayerNormalization"), (MS, "EmbedLayerNormalization")}


def is_norm(node: onnx.NodeProto, opset: int) -> bool:
    key = ("" if node.domain in ("", "ai.onnx") else node.domain, node.op_type)
    if key == ("", "LayerNormalization"):
        return opset < 17
    return key in NORMS


def _used(w: Writer, node: onnx.NodeProto, indices) -> bool:
    return any(output(node, i) in w.used for i in indices if output(node, i))


def normalise(n: Nodes, x: str, gamma: str, beta: str | None, eps: float, simplified: bool,
              axis: int, out: str) -> list[str] | None:
    """LayerNorm (or RMSNorm) of x over its axes from `axis` on, written as standard ops."""
    w = n.w
    if axis != -1:
        rank = w.ranks.get(x)
        if rank is None:
            return None
        axes = list(range(axis % rank, rank))
    else:
        axes = [-1]
    if not simplified and w.opset >= 17:
        inputs = [x, gamma] + ([beta] if beta else [])
        return n.op("LayerNormalization", *inputs, out=out, axis=axis, epsilon=eps)
    centred = x if simplified else n.op("Sub", x, n.reduce("ReduceMean", x, axes))
    variance = n.reduce("ReduceMean", n.op("Mul", centred, centred), axes)
    spread = n.op("Sqrt", n.op("Add", variance, n.const(eps)))
    scaled = n.op("Div", centred, spread)
    if beta:
        return n.op("Add", n.op("Mul", scaled, gamma), beta, out=out)
    return n.op("Mul", scaled, gamma, out=out)


def _layer_norm(w: Writer, node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
    """Default-domain LayerNormalization (opset < 17) or SimplifiedLayerNormalization."""
    if _used(w, node, (1, 2)):
        return None
    attrs = attrs_of(node)
    n = Nodes(w, node)
    simplified = node.op_type == "SimplifiedLayerNormalization"
    done = normalise(n, node.input[0], node.input[1], given(node, 2), attrs.get("epsilon", 1e-5),
                     simplified, attrs.get("axis", -1), node.output[0])
    return None if done is None else n.nodes


def _skip_layer_norm(w: Writer, node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
    """Inputs: input, skip, gamma, beta (not for the simplified one), bias."""
    if _used(w, node, (1, 2)):
        return None
    simplified = node.op_type == "SkipSimplifiedLayerNormalization"
    n = Nodes(w, node)
    beta, bias = (None, given(node, 3)) if simplified else (given(node, 3), given(node, 4))
    summed_out = output(node, 3)
    total = n.op("Add", node.input[0], node.input[1],
                 out=None if bias else summed_out)
    if bias:
        total = n.op("Add", total, bias, out=summed_out)
    normalise(n, total, node.input[2], beta, attrs_of(node).get("epsilon", 1e-12), simplified,
              -1, node.output[0])
    return n.nodes


def token_ids(w: Writer, ids: str) -> str:
    """The token-id graph input behind ONNX Runtime's Cast of it to int32, else `ids`."""
    cast = w.producers.get(ids)
    if cast is not None and cast.op_type == "Cast" and cast.input[0] in w.graph_inputs \
            and w.elem_types.get(cast.input[0]) in (TensorProto.INT64, TensorProto.INT32):
        return cast.input[0]
    return ids


def _embed_layer_norm(w: Writer, node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
    """Inputs: input_ids, segment_ids, word_embedding, position_embedding, segment_embedding,
    gamma, beta, mask, position_ids."""
    n = Nodes(w, node)
    ids = token_ids(w, node.input[0])
    total = n.op("Gather", node.input[2], ids, axis=0)
    positions = given(node, 8)
    if positions:
        position = n.op("Gather", node.input[3], positions, axis=0)
    else:  # positions 0 … S-1: the first S rows of the table
        position = n.op("Slice", node.input[3], n.ints([0]), n.length(ids, 1), n.ints([0]))
    total = n.op("Add", total, position)
    if given(node, 1) and given(node, 4):
        total = n.op("Add", total, n.op("Gather", node.input[4], node.input[1], axis=0))
    summed = output(node, 2)
    if summed:
        total = n.op("Identity", total, out=summed)
    normalise(n, total, node.input[5], given(node, 6), attrs_of(node).get("epsilon", 1e-12),
              False, -1, node.output[0])
    lengths = output(node, 1)
    if lengths and lengths in w.used:
        mask = given(node, 7)
        if mask is None:
            return None
        as_int = n.op("Cast", mask, to=TensorProto.INT32)
        n.reduce("ReduceSum", as_int, [1], keepdims=0, out=lengths)
        w.ranks[lengths] = 1
        w.elem_types[lengths] = TensorProto.INT32
    return n.nodes


def unfuse_norm(w: Writer, node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
    if node.op_type == "EmbedLayerNormalization":
        return _embed_layer_norm(w, node)
    if node.op_type.startswith("Skip"):
        return _skip_layer_norm(w, node)
    return _layer_norm(w, node)
