"""Loop and Scan are unrolled only when it is safe; otherwise refused in one line. (Their
gradients, once unrolled, are checked in test_conformance.py against central differences.)"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from onnxpath.autodiff import gradient_graph
from onnxpath.errors import ModelError
from tests.autodiff.conformance_cases import _loop_body, _scan_body
from tests.oracle import graph_model, randn


def _refused(model, wrt, pattern):
    with pytest.raises(ModelError, match=pattern) as refusal:
        gradient_graph(model, "y", wrt)
    print(refusal.value)
    assert "\n" not in str(refusal.value)


def test_loop_with_a_run_time_trip_count_is_refused():
    """The trip count comes from the data (ArgMax of x): nothing to unroll."""
    nodes = [helper.make_node("ArgMax", ["x"], ["trips"], keepdims=0),
             helper.make_node("Loop", ["trips", "", "x"], ["y", "steps"], body=_loop_body())]
    _refused(graph_model(nodes, {"x": randn(2)}), ["x"], "trip count is computed at run time")


def test_loop_whose_body_decides_when_to_stop_is_refused():
    body = _loop_body()
    body.node[0].CopyFrom(helper.make_node("ReduceMax", ["v"], ["m"], keepdims=0))
    body.node.insert(1, helper.make_node("Less", ["m", "decay"], ["cond_out"]))
    nodes = [helper.make_node("Loop", ["trips", "", "x"], ["y", "steps"], body=body)]
    model = graph_model(nodes, {"x": randn(2), "trips": np.asarray(3, np.int64)})
    _refused(model, ["x"], "condition computed at run time")


def test_scan_body_reading_the_differentiated_tensor_from_outside_is_refused():
    """The body multiplies by `w`, an outer tensor that depends on x: its gradient would not be
    one of the Scan's inputs, so it is refused rather than dropped."""
    body = _scan_body()
    del body.initializer[:]
    nodes = [helper.make_node("Mul", ["x0", "two"], ["w"]),
             helper.make_node("Scan", ["s0", "x"], ["s", "y"], body=body, num_scan_inputs=1)]
    inputs = {"x0": randn(2), "two": np.asarray(2.0, np.float32), "s0": randn(2, seed=1),
              "x": randn(4, 2, seed=2)}
    model = graph_model(nodes, inputs, constants=["two"])
    model.graph.output[0].type.tensor_type.elem_type = TensorProto.FLOAT
    _refused(model, ["x0", "x"], "reads 'w' from the outer scope")
