"""Small models with known attributions, built with onnx.helper, for the evaluation tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def linear_model(weights: np.ndarray, shape: tuple[int, int, int],
                 bias: np.ndarray | None = None) -> onnx.ModelProto:
    """logits = flatten(x) @ weights (+ bias): the gradient of logit c is weights[:, c]
    reshaped to `shape`, exactly, everywhere."""
    classes = weights.shape[1]
    inits = [numpy_helper.from_array(weights.astype(np.float32), "w")]
    nodes = [helper.make_node("Flatten", ["x"], ["flat"], name="flatten"),
             helper.make_node("MatMul", ["flat", "w"], ["mm"], name="fc")]
    last = "mm"
    if bias is not None:
        inits.append(numpy_helper.from_array(bias.astype(np.float32), "b"))
        nodes.append(helper.make_node("Add", ["mm", "b"], ["logits"], name="fc_bias"))
        last = "logits"
    graph = helper.make_graph(
        nodes, "linear", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *shape])],
        [helper.make_tensor_value_info(last, TensorProto.FLOAT, ["N", classes])],
        initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def one_pixel_model(shape=(3, 8, 8), pixel=(2, 5), weight=2.0) -> onnx.ModelProto:
    """Two classes; logit 0 = weight * (sum of the channels at `pixel`), logit 1 = 0.5. Only
    that pixel matters."""
    c, h, w = shape
    weights = np.zeros((c * h * w, 2), dtype=np.float32)
    for ch in range(c):
        weights[ch * h * w + pixel[0] * w + pixel[1], 0] = weight
    return linear_model(weights, shape, bias=np.array([0.0, 0.5], dtype=np.float32))


def conv_bn_model(size: int = 16, classes: int = 3, seed: int = 0) -> onnx.ModelProto:
    """Conv -> BatchNormalization -> Relu -> GlobalAveragePool -> Flatten -> Gemm."""
    rng = np.random.default_rng(seed)
    arrays = {
        "conv_w": rng.standard_normal((6, 3, 3, 3)), "conv_b": rng.standard_normal(6),
        "bn_scale": rng.uniform(0.5, 1.5, 6), "bn_bias": rng.standard_normal(6),
        "bn_mean": rng.standard_normal(6), "bn_var": rng.uniform(0.5, 2.0, 6),
        "fc_w": rng.standard_normal((classes, 6)), "fc_b": rng.standard_normal(classes),
    }
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in arrays.items()]
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1],
                         name="conv"),
        helper.make_node("BatchNormalization", ["c", "bn_scale", "bn_bias", "bn_mean", "bn_var"],
                         ["bn"], name="bn"),
        helper.make_node("Relu", ["bn"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes, "convbn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def model_forward(model: onnx.ModelProto):
    """A forward function (batch -> logits) straight from ONNX Runtime."""
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: np.asarray(x, dtype=np.float32)})[0]
