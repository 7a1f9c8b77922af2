"""Small models that reproduce how exporters write models (issue #10's failure classes), built
with onnx.helper, each with the float64 numpy reference of what onnxpath must compute."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

F = TensorProto.FLOAT
RNG = np.random.default_rng(0)


def weights(*shape, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale / np.sqrt(np.prod(shape[1:]) or 1)).astype(
        np.float32)


def make(nodes, inputs, outputs, inits: dict, opset: int = 17, ml: bool = False,
         name: str = "intake") -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs,
                              initializer=[numpy_helper.from_array(np.asarray(v), k)
                                           for k, v in inits.items()])
    opsets = [helper.make_opsetid("", opset)]
    if ml:
        opsets.append(helper.make_opsetid("ai.onnx.ml", 1))
    model = helper.make_model(graph, opset_imports=opsets, producer_name="onnxpath-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


# --- an MLP with two outputs: features first, logits (through Softmax) second -------------

MLP = {"w1": weights(8, 6), "b1": weights(8), "w2": weights(5, 8), "b2": weights(5)}


def mlp_two_outputs(batch=None) -> onnx.ModelProto:
    """x (N×6) -> features = Relu(Gemm) (first output) -> Gemm -> Softmax = probs (second)."""
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["pre"], transB=1),
             helper.make_node("Relu", ["pre"], ["features"]),
             helper.make_node("Gemm", ["features", "w2", "b2"], ["logits"], transB=1),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
    x = helper.make_tensor_value_info("x", F, [batch if batch is not None else "N", 6])
    outs = [helper.make_tensor_value_info("features", F, ["N", 8]),
            helper.make_tensor_value_info("probs", F, ["N", 5])]
    return make(nodes, [x], outs, MLP)


def mlp_reference(x: np.ndarray, target: int, output: str = "logits") -> np.ndarray:
    """d output[target] / dx in float64 (logits: the Softmax input)."""
    w1, b1, w2 = (MLP[k].astype(np.float64) for k in ("w1", "b1", "w2"))
    pre = x.astype(np.float64) @ w1.T + b1
    if output == "features":
        return (pre[:, target] > 0)[:, None] * w1[target][None]
    return ((pre > 0) * w2[target][None]) @ w1


def set_batch_dim(model: onnx.ModelProto, how: str) -> onnx.ModelProto:
    """The input's batch dim as exporters write it: a name, -1 (Paddle), 0, nothing, or 1."""
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    dim.Clear()
    if how == "name":
        dim.dim_param = "batch_size"
    elif how in ("-1", "0", "1"):
        dim.dim_value = int(how)
    return model


# --- logits shaped N×K×1×1 (the ONNX zoo's SqueezeNet / DenseNet convention) -------------

HEAD = {"w": weights(5, 3, 1, 1)}


def conv_head(softmax: bool = False, then: tuple[str, ...] = ()) -> onnx.ModelProto:
    """x (N×3×4×4) -> 1×1 Conv (5) -> Relu -> GlobalAveragePool: N×5×1×1 logits, optionally
    through Softmax and `then` (Flatten, Cast, Identity, Transpose...)."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["pooled"])]
    last = "pooled"
    if softmax:
        nodes.append(helper.make_node("Softmax", [last], ["sm"], axis=1))
        last = "sm"
    for k, op in enumerate(then):
        attrs = {"to": F} if op == "Cast" else {"perm": [0, 2, 3, 1]} if op == "Transpose" \
            else {}
        nodes.append(helper.make_node(op, [last], [f"after{k}"], **attrs))
        last = f"after{k}"
    x = helper.make_tensor_value_info("x", F, ["N", 3, 4, 4])
    return make(nodes, [x], [helper.make_tensor_value_info(last, F, ["N", 5, 1, 1])], HEAD)


def conv_head_reference(x: np.ndarray, target: int) -> tuple[np.ndarray, np.ndarray]:
    """(logits N×5, d logit[target] / dx) in float64."""
    w = HEAD["w"][:, :, 0, 0].astype(np.float64)
    pre = np.einsum("kc,nchw->nkhw", w, x.astype(np.float64))
    logits = np.maximum(pre, 0).mean(axis=(2, 3))
    grad = (pre[:, target] > 0)[:, None] * w[target][None, :, None, None] / 16
    return logits, grad


# --- skl2onnx-style classifiers: int64 label + ZipMap, and a tree ensemble ---------------

LINEAR = {"coef": weights(4, 3), "intercept": weights(3)}


def zipmap_classifier(zipmap: bool = True) -> onnx.ModelProto:
    """x (N×4) -> MatMul + Add -> Softmax -> probabilities; label = ArgMax (int64), then
    ZipMap over the probabilities (skl2onnx's MLPClassifier layout)."""
    nodes = [helper.make_node("MatMul", ["x", "coef"], ["mm"]),
             helper.make_node("Add", ["mm", "intercept"], ["scores"]),
             helper.make_node("Softmax", ["scores"], ["probabilities"], axis=1),
             helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0)]
    outs = [helper.make_tensor_value_info("label", TensorProto.INT64, ["N"])]
    if zipmap:
        nodes.append(helper.make_node("ZipMap", ["probabilities"], ["output_probability"],
                                      domain="ai.onnx.ml", classlabels_int64s=[0, 1, 2]))
        outs.append(helper.make_value_info("output_probability", helper.make_sequence_type_proto(
            helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(F, [])))))
    else:
        outs.append(helper.make_tensor_value_info("probabilities", F, ["N", 3]))
    x = helper.make_tensor_value_info("x", F, ["N", 4])
    return make(nodes, [x], outs, LINEAR, opset=13, ml=True)


def linear_reference(target: int) -> np.ndarray:
    return LINEAR["coef"].astype(np.float64)[:, target]


def tree_ensemble() -> onnx.ModelProto:
    """A skl2onnx TreeEnsembleClassifier with ZipMap: one tree splitting on feature 1."""
    tree = helper.make_node(
        "TreeEnsembleClassifier", ["x"], ["label", "probabilities"], domain="ai.onnx.ml",
        classlabels_int64s=[0, 1, 2], nodes_treeids=[0, 0, 0], nodes_nodeids=[0, 1, 2],
        nodes_featureids=[1, 0, 0], nodes_modes=["BRANCH_LEQ", "LEAF", "LEAF"],
        nodes_values=[0.5, 0.0, 0.0], nodes_truenodeids=[1, 0, 0],
        nodes_falsenodeids=[2, 0, 0], nodes_missing_value_tracks_true=[0, 0, 0],
        class_treeids=[0, 0, 0, 0], class_nodeids=[1, 1, 2, 2], class_ids=[0, 1, 1, 2],
        class_weights=[0.7, 0.3, 0.4, 0.6], post_transform="NONE")
    zipmap = helper.make_node("ZipMap", ["probabilities"], ["output_probability"],
                              domain="ai.onnx.ml", classlabels_int64s=[0, 1, 2])
    x = helper.make_tensor_value_info("x", F, [None, 4])
    outs = [helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
            helper.make_value_info("output_probability", helper.make_sequence_type_proto(
                helper.make_map_type_proto(TensorProto.INT64,
                                           helper.make_tensor_type_proto(F, []))))]
    return make([tree, zipmap], [x], outs, {}, opset=13, ml=True)


# --- a uint8 NHWC image input, cast and normalised in the graph (tf2onnx style) ---------

NHWC = {"scale": np.float32(1 / 255), "mean": np.float32(0.5), "w": weights(4, 3, 3, 3),
        "fc": weights(3, 4), "shape2": np.array([0, -1], np.int64)}


def uint8_nhwc() -> onnx.ModelProto:
    """x uint8 N×8×8×3 -> Cast -> *1/255 -> -0.5 -> Transpose to NCHW -> Conv 3×3 -> Relu ->
    GlobalAveragePool -> Reshape -> Gemm: 3 logits."""
    nodes = [helper.make_node("Cast", ["x"], ["xf"], to=F),
             helper.make_node("Mul", ["xf", "scale"], ["scaled"]),
             helper.make_node("Sub", ["scaled", "mean"], ["centred"]),
             helper.make_node("Transpose", ["centred"], ["nchw"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["nchw", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Reshape", ["g", "shape2"], ["flat"]),
             helper.make_node("Gemm", ["flat", "fc"], ["logits"], transB=1)]
    x = helper.make_tensor_value_info("x", TensorProto.UINT8, ["unk__0", 8, 8, 3])
    return make(nodes, [x], [helper.make_tensor_value_info("logits", F, ["unk__0", 3])],
                NHWC)


# --- token ids with an attention mask (a text classifier's inputs) ----------------------

TEXT = {"emb": weights(20, 6, scale=3.0), "fc": weights(4, 6), "axis1": np.array([1], np.int64),
        "axis2": np.array([2], np.int64)}


def token_classifier(segments: bool = False) -> onnx.ModelProto:
    """input_ids (N×T int64) -> Gather(emb) -> × mask -> ReduceSum over T -> Gemm: 4 logits.
    attention_mask (N×T int64) is cast and multiplies the embeddings."""
    nodes = [helper.make_node("Gather", ["emb", "input_ids"], ["embedded"]),
             helper.make_node("Cast", ["attention_mask"], ["maskf"], to=F),
             helper.make_node("Unsqueeze", ["maskf", "axis2"], ["mask3"]),
             helper.make_node("Mul", ["embedded", "mask3"], ["masked"]),
             helper.make_node("ReduceSum", ["masked", "axis1"], ["pooled"], keepdims=0),
             helper.make_node("Gemm", ["pooled", "fc"], ["logits"], transB=1)]
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64,
                                            ["batch", "seq"])]
    return make(nodes, inputs, [helper.make_tensor_value_info("logits", F, ["batch", 4])],
                TEXT)


def token_reference(mask: np.ndarray, target: int) -> np.ndarray:
    """d logit[target] / d embedded (T×D) for one example, in float64."""
    return mask.astype(np.float64)[:, None] * TEXT["fc"].astype(np.float64)[target][None]
