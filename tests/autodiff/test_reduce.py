"""Reductions against torch in float64: axes as attribute (opset 17) and as input (opset 18),
keepdims, noop_with_empty_axes, and ties for ReduceMax/ReduceMin."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import helper

from tests.oracle import check_graph, check_node, graph_model, randn

X = randn(2, 3, 4, 5)
TORCH = {"ReduceSum": torch.sum, "ReduceMean": torch.mean, "ReduceMax": torch.amax,
         "ReduceMin": torch.amin}

ROWS = [
    # id, axes (None: all), keepdims
    ("spatial_keep", [2, 3], 1),
    ("spatial_drop", [2, 3], 0),
    ("channel_negative", [-3], 1),
    ("last_drop", [-1], 0),
    ("all_keep", None, 1),
    ("all_drop", None, 0),
]


def reference(op_type: str, axes, keepdims: int):
    dims = tuple(range(4)) if axes is None else tuple(axes)
    return lambda x, *_: TORCH[op_type](x, dim=dims, keepdim=bool(keepdims))


@pytest.mark.parametrize("opset", [17, 18])
@pytest.mark.parametrize("axes,keepdims", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
@pytest.mark.parametrize("op_type", list(TORCH))
def test_reduce(op_type, axes, keepdims, opset):
    axes_as_input = op_type == "ReduceSum" or opset >= 18
    attrs = {"keepdims": keepdims}
    inputs = {"x": X}
    if axes is not None and axes_as_input:
        inputs["axes"] = np.asarray(axes, np.int64)
    elif axes is not None:
        attrs["axes"] = axes
    check_node(op_type, inputs, reference(op_type, axes, keepdims), attrs, opset=opset)


def test_reduce_noop_with_empty_axes():
    check_node("ReduceSum", {"x": X}, lambda x: x * 1.0, {"noop_with_empty_axes": 1})


@pytest.mark.parametrize("op_type", ["ReduceMax", "ReduceMin"])
def test_reduce_extremum_ties_share_the_gradient(op_type):
    """Post-ReLU maps are full of tied zeros: the gradient splits evenly between tied extrema
    (torch's amax/amin), and never multiplies by the number of ties."""
    x = randn(2, 3, 4, 4)
    x[0, 1] = 0.0
    x[1, 2, :2] = 5.0
    sign = 1.0 if op_type == "ReduceMax" else -1.0
    nodes = [helper.make_node("Mul", ["x", "sign"], ["m"]),
             helper.make_node("Relu", ["m"], ["r"]),
             helper.make_node("Mul", ["r", "sign"], ["rs"]),
             helper.make_node(op_type, ["rs"], ["y"], axes=[2, 3], keepdims=0)]
    inputs = {"x": x, "sign": np.asarray(sign, np.float32)}
    model = graph_model(nodes, inputs, constants=["sign"])
    check_graph(model, {"x": x},
                lambda t: TORCH[op_type](torch.relu(t * sign) * sign, dim=(2, 3)), {"x": x})
