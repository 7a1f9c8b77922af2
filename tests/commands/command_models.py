"""Small models for the command tests, built with onnx.helper so each reads like its spec."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def classifier(dynamic: bool = False, softmax: bool = False, flatten_after_softmax: bool = False,
               custom_op: bool = False, size: int = 16, classes: int = 5) -> onnx.ModelProto:
    """Conv(stride 1) -> Relu -> Conv(stride 2) -> Clip -> MaxPool -> GAP -> Reshape -> Gemm,
    optionally ending in Softmax (and a Flatten after it, SqueezeNet style).

    `dynamic` declares the input as N×3×H×W; `custom_op` adds an op from a custom domain."""
    rng = np.random.default_rng(0)

    def weight(name, *shape):
        return numpy_helper.from_array(
            (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32), name)

    inits = [weight("w1", 8, 3, 3, 3), weight("b1", 8), weight("w2", 8, 8, 3, 3),
             weight("fc_w", classes, 8), weight("fc_b", classes),
             numpy_helper.from_array(np.array([0, -1], np.int64), "flat_shape"),
             numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
             numpy_helper.from_array(np.array(6.0, np.float32), "hi")]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], strides=[2, 2], pads=[0, 0, 1, 1],
                         name="conv2"),
        helper.make_node("Clip", ["c2", "lo", "hi"], ["r2"], name="relu6"),
    ]
    last = "r2"
    if custom_op:
        nodes.append(helper.make_node("Frobnicate", [last], ["odd"], domain="com.example",
                                      name="frobnicate"))
        last = "odd"
    nodes += [
        helper.make_node("MaxPool", [last], ["p"], kernel_shape=[2, 2], strides=[2, 2],
                         name="pool"),
        helper.make_node("GlobalAveragePool", ["p"], ["g"], name="gap"),
        helper.make_node("Reshape", ["g", "flat_shape"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1, name="fc"),
    ]
    out, out_shape = "logits", ["N", classes]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1, name="softmax"))
        out = "probs"
        if flatten_after_softmax:
            nodes[-2:] = [  # logits as N×C×1×1 (a 1×1 conv head), Softmax over C, Flatten
                helper.make_node("Unsqueeze", ["logits_flat", "axes"], ["logits4"],
                                 name="to_4d"),
                helper.make_node("Softmax", ["logits4"], ["probs4"], axis=1, name="softmax"),
                helper.make_node("Flatten", ["probs4"], ["probs"], name="flatten_probs")]
            nodes.insert(-3, helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits_flat"],
                                              transB=1, name="fc"))
            nodes = [n for n in nodes if n.output[0] != "logits"]
            inits.append(numpy_helper.from_array(np.array([2, 3], np.int64), "axes"))
    in_shape = ["N", 3, "H", "W"] if dynamic else ["N", 3, size, size]
    graph = helper.make_graph(
        nodes, "classifier", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)], initializer=inits)
    opsets = [helper.make_opsetid("", 17)]
    if custom_op:
        opsets.append(helper.make_opsetid("com.example", 1))
    model = helper.make_model(graph, opset_imports=opsets, producer_name="onnxpath-tests")
    model.ir_version = 8
    return model


def save(model: onnx.ModelProto, path, external: bool = False):
    """Save `model`; `external` puts every tensor, however small, in `<name>.bin` beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if external:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=path.stem + ".bin", size_threshold=0)
    else:
        onnx.save(model, str(path))
    return path
