"""Small models built with onnx.helper: a conv classifier, optionally with a fixed batch or
with an op that has no gradient rule (Sin) on the logits path."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def conv_net(path, batch: int | str = "N", rule_less_op: str | None = None, size: int = 16):
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((6, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((6, 5)).astype(np.float32), "fc")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu")]
    last = "r"
    if rule_less_op:
        nodes.append(helper.make_node(rule_less_op, ["r"], ["odd"], name="odd_node"))
        last = "odd"
    nodes += [helper.make_node("GlobalAveragePool", [last], ["g"], name="gap"),
              helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
              helper.make_node("MatMul", ["f", "fc"], ["logits"], name="fc")]
    graph = helper.make_graph(
        nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                     [batch, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 5])],
        initializer=inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path
