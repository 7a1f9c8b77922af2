"""A tiny conv classifier built with onnx.helper, for the command-line tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def conv_classifier(tmp_path, softmax: bool = True, extra_op: str | None = None):
    """A 3x32x32 -> 4-class conv net built with onnx.helper; `extra_op` is inserted after the
    ReLU (to make a model with an op that has no gradient rule)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), "fc")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu")]
    last = "r"
    if extra_op:
        nodes.append(helper.make_node(extra_op, ["r"], ["e"], name="odd_node"))
        last = "e"
    nodes += [helper.make_node("GlobalAveragePool", [last], ["g"], name="gap"),
              helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
              helper.make_node("MatMul", ["f", "fc"], ["logits"], name="fc")]
    out = "logits"
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1, name="softmax"))
        out = "probs"
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", 4])], initializer=[w, fc])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / ("tiny.onnx" if not extra_op else f"tiny_{extra_op}.onnx")
    onnx.save(model, path)
    return path
