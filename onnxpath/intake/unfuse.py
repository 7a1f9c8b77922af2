"""ONNX Runtime's fused contrib ops rewritten as standard ONNX ops.

A model saved by ONNX Runtime's optimizer (`SessionOptions.optimized_model_filepath`, up to
ORT_ENABLE_EXTENDED) or by its transformers optimizer (`onnxruntime.transformers.optimizer`)
holds com.microsoft ops no gradient rule knows, and a FusedConv with activation "Relu" hides
that Relu from the pathway method. `unfuse` undoes the fusions, each in the module of its
family:
- here: FusedConv → Conv (+ Add of the optional 4th input Z) + the activation node;
  FusedGemm → Gemm + the activation node; FusedMatMul → α·MatMul of the (transposed) inputs;
- unfuse_activations.py: Gelu, BiasGelu, FastGelu, QuickGelu, BiasAdd;
- unfuse_norm.py: LayerNormalization below opset 17 (ONNX Runtime's own), Simplified-,
  Skip-, SkipSimplified- and EmbedLayerNormalization;
- unfuse_attention.py: Attention, MultiHeadAttention, RotaryEmbedding.
A form a rewrite does not cover (a past state, packed QKV, …) and other contrib ops are left as
they are: the gradient walk refuses them in one line.
"""

from __future__ import annotations

import contextlib

import numpy as np
import onnx
from onnx import helper

from onnxpath.intake.unfuse_activations import ACTIVATIONS, unfuse_activation
from onnxpath.intake.unfuse_attention import ATTENTION, unfuse_attention
from onnxpath.intake.unfuse_norm import is_norm, unfuse_norm
from onnxpath.intake.unfuse_writer import MS, Nodes, Writer, attrs_of, opset_of

# Activations FusedConv carries, with the names of its activation_params in order.
CONV_PARAMS = {"Relu": (), "Tanh": (), "Sigmoid": (), "LeakyRelu": ("alpha",),
               "HardSigmoid": ("alpha", "beta"), "Clip": ("min", "max")}
# FusedGemm writes an activation's attributes as activation_<name>.
GEMM_ACTIVATIONS = ("Relu", "Tanh", "Sigmoid", "LeakyRelu", "HardSigmoid", "Elu", "Selu",
                    "Softsign", "ThresholdedRelu")


def _fused(node: onnx.NodeProto, opset: int) -> bool:
    if node.domain == MS and node.op_type in (
            "FusedConv", "FusedGemm", "FusedMatMul", *ACTIVATIONS, *ATTENTION):
        return True
    return is_norm(node, opset)


def _activation(w: Writer, op: str, x: str, y: str, params: dict, elem: int,
                prefix: str) -> list[onnx.NodeProto]:
    """The node(s) y = op(x) with `params` as the op's attributes (Clip's as inputs)."""
    name = w.name(f"{prefix}/{op}")
    if op == "Clip":
        low = params.get("min", -np.finfo(np.float32).max)
        high = params.get("max", np.finfo(np.float32).max)
        if w.opset < 11:
            return [helper.make_node("Clip", [x], [y], name=name, min=float(low),
                                     max=float(high))]
        inputs = [x, w.const(f"{prefix}/clip_min", low, elem),
                  w.const(f"{prefix}/clip_max", high, elem)]
        return [helper.make_node("Clip", inputs, [y], name=name)]
    return [helper.make_node(op, [x], [y], name=name,
                             **{k: float(v) for k, v in params.items()})]


def _fused_conv(w: Writer, node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
    attrs = attrs_of(node)
    act = str(attrs.pop("activation", ""))
    values = list(attrs.pop("activation_params", []))
    if act and act not in CONV_PARAMS:
        return None
    prefix = node.name or node.output[0]
    elem = w.elem(node)
    inputs = list(node.input[:3])
    while inputs and not inputs[-1]:
        inputs.pop()
    z = node.input[3] if len(node.input) > 3 and node.input[3] else None
    out = node.output[0]
    conv_out = w.name(f"{prefix}/conv_out") if (act or z) else out
    nodes = [helper.make_node("Conv", inputs, [conv_out], name=w.name(f"{prefix}/Conv"),
                              **attrs)]
    if z:
        summed = w.name(f"{prefix}/sum_out") if act else out
        nodes.append(helper.make_node("Add", [conv_out, z], [summed],
                                      name=w.name(f"{prefix}/Add")))
        conv_out = summed
    if act:
        params = dict(zip(CONV_PARAMS[act], values, strict=False))
        nodes += _activation(w, act, conv_out, out, params, elem, prefix)
    return nodes


def _fused_gemm(w: Writer, node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
    attrs = attrs_of(node)
    act = str(attrs.pop("activation", ""))
    params = {}
    for key in list(attrs):
        if key.startswith("activation_"):
            params[key[len("activation_"):]] = attrs.pop(key)
        elif key == "leaky_relu_alpha":
            params["alpha"] = attrs.pop(key)
    if act and act not in GEMM_ACTIVATIONS:
        return None
    allowed = {"LeakyRelu": ("alpha",), "HardSigmoid": ("alpha", "beta"), "Elu": ("alpha",),
               "Selu": ("alpha", "gamma"), "ThresholdedRelu": ("alpha",)}.get(act, ())
    params = {k: v for k, v in params.items() if k in allowed}
    prefix = node.name or node.output[0]
    out = node.output[0]
    gemm_out = w.name(f"{prefix}/gemm_out") if act else out
    nodes = [helper.make_node("Gemm", list(node.input), [gemm_out],
                              name=w.name(f"{prefix}/Gemm"), **attrs)]
    if act:
        nodes += _activation(w, act, gemm_out, out, params, w.elem(node), prefix)
    return nodes


def _fused_matmul(w: Writer, node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
    """Y = alpha · A' · B', A' = A with its last two axes swapped if transA (B' likewise)."""
    attrs = attrs_of(node)
    if attrs.get("transBatchA", 0) or attrs.get("transBatchB", 0):
        return None
    n = Nodes(w, node)
    inputs = []
    for tensor, flag in zip(node.input[:2], ("transA", "transB"), strict=True):
        if attrs.get(flag, 0):
            rank = w.ranks.get(tensor)
            if rank is None or rank < 2:
                return None
            tensor = n.op("Transpose", tensor,
                          perm=[*range(rank - 2), rank - 1, rank - 2])
        inputs.append(tensor)
    alpha = attrs.get("alpha", 1.0)
    if alpha == 1.0:
        n.op("MatMul", *inputs, out=node.output[0])
    else:
        n.op("Mul", n.op("MatMul", *inputs), n.const(alpha), out=node.output[0])
    return n.nodes


def _rewrite(w: Writer, node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
    if node.domain != MS:
        return unfuse_norm(w, node)
    if node.op_type == "FusedConv":
        return _fused_conv(w, node)
    if node.op_type == "FusedGemm":
        return _fused_gemm(w, node)
    if node.op_type == "FusedMatMul":
        return _fused_matmul(w, node)
    if node.op_type in ACTIVATIONS:
        return unfuse_activation(w, node)
    if node.op_type in ATTENTION:
        return unfuse_attention(w, node)
    return unfuse_norm(w, node)


def _unfuse_pass(model: onnx.ModelProto, opset: int) -> int:
    """Rewrite, in place, every fused node whose rewrite has what it needs; the number done."""
    w = Writer(model)
    rewritten: list[onnx.NodeProto] = []
    done = 0
    for node in model.graph.node:
        written = len(w.initializers)
        new = _rewrite(w, node) if _fused(node, opset) else None
        if new is None:
            w.undo(written)
        done += new is not None
        rewritten.extend(new if new is not None else [node])
    del model.graph.node[:]
    model.graph.node.extend(rewritten)
    model.graph.initializer.extend(w.initializers)
    return done


def unfuse(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` with ONNX Runtime's fused ops (above) rewritten as standard ONNX ops;
    `model` itself when it has none. Output names are kept, so value_info stays valid; the new
    intermediate tensors get theirs from shape inference.

    A rewrite that needs a shape (MultiHeadAttention's widths, a mask's rank) may find it only
    once the fused ops before it are standard ones that onnx's shape inference follows (a
    projection of EmbedLayerNormalization's output), so passes repeat while they make
    progress."""
    opset = opset_of(model)
    if not any(_fused(n, opset) for n in model.graph.node):
        return model
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for _ in range(4):
        if not _unfuse_pass(model, opset) \
                or not any(_fused(n, opset) for n in model.graph.node):
            break
    if not any(n.domain == MS for n in model.graph.node):
        kept = [o for o in model.opset_import if o.domain != MS]
        del model.opset_import[:]
        model.opset_import.extend(kept)
    # Inference is a courtesy here: normalise's own shape handling follows.
    with contextlib.suppress(Exception):
        model = onnx.shape_inference.infer_shapes(model)
    return model
