"""Pooling against torch in float64: overlapping windows, pads, ceil_mode, dilation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from onnx import helper

from tests.oracle import check_graph, check_node, graph_model, randn

MAX = [
    # id, x shape, attrs, torch kwargs
    ("k2_s2", (2, 3, 8, 8), {"kernel_shape": [2, 2], "strides": [2, 2]}, dict(kernel_size=2)),
    ("k3_s1_overlap", (2, 3, 8, 8), {"kernel_shape": [3, 3]}, dict(kernel_size=3, stride=1)),
    ("k3_s2_pad1", (2, 3, 8, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1] * 4},
     dict(kernel_size=3, stride=2, padding=1)),
    ("k3_s2_ceil", (2, 3, 8, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},
     dict(kernel_size=3, stride=2, ceil_mode=True)),
    ("k3_s2_pad1_ceil", (1, 2, 10, 10),
     {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1] * 4, "ceil_mode": 1},
     dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ("dilation2", (2, 3, 9, 9), {"kernel_shape": [2, 2], "dilations": [2, 2]},
     dict(kernel_size=2, stride=1, dilation=2)),
    ("rect_window", (2, 3, 8, 9), {"kernel_shape": [3, 2], "strides": [1, 2]},
     dict(kernel_size=(3, 2), stride=(1, 2))),
    ("maxpool1d", (2, 3, 11), {"kernel_shape": [3], "strides": [2], "pads": [1, 1]},
     dict(kernel_size=3, stride=2, padding=1)),
]


@pytest.mark.parametrize("shape,attrs,kwargs", [m[1:] for m in MAX], ids=[m[0] for m in MAX])
def test_max_pool(shape, attrs, kwargs):
    pool = F.max_pool1d if len(shape) == 3 else F.max_pool2d
    check_node("MaxPool", {"x": randn(*shape)}, lambda x: pool(x, **kwargs), attrs)


@pytest.mark.parametrize("indices_used", [False, True], ids=["indices_unused", "indices_used"])
def test_max_pool_with_indices_output(indices_used):
    """A MaxPool node that already outputs Indices; the graph may consume them too."""
    x = randn(2, 3, 8, 8)
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1] * 4}
    nodes = [helper.make_node("MaxPool", ["x"], ["pooled", "idx"], **attrs)]
    if indices_used:  # an int64 branch that reaches the output but carries no gradient
        nodes += [helper.make_node("Cast", ["idx"], ["idx_f"], to=1),
                  helper.make_node("Mul", ["idx_f", "zero"], ["no_op"]),
                  helper.make_node("Add", ["pooled", "no_op"], ["y"])]
        inputs = {"x": x, "zero": randn(1, seed=1) * 0}
    else:
        nodes[0].output[0] = "y"
        inputs = {"x": x}
    model = graph_model(nodes, inputs, constants=["zero"])
    check_graph(model, {"x": x}, lambda t: F.max_pool2d(t, 3, 2, 1), {"x": x})


AVG = [
    ("k2_s2", (2, 3, 8, 8), {"kernel_shape": [2, 2], "strides": [2, 2]}, dict(kernel_size=2)),
    ("k3_s1_overlap", (2, 3, 7, 7), {"kernel_shape": [3, 3]}, dict(kernel_size=3, stride=1)),
    ("k3_s2_pad1", (2, 3, 8, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1] * 4},
     dict(kernel_size=3, stride=2, padding=1)),
    ("k3_s2_ceil", (2, 3, 8, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},
     dict(kernel_size=3, stride=2, ceil_mode=True)),
    ("k3_s2_pad1_ceil", (1, 2, 10, 10),
     {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1] * 4, "ceil_mode": 1},
     dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    # Not listed: ceil_mode windows that would start inside the end padding (k2 s2 pad1 on 9x9).
    # ONNX Runtime's kernel drops them as torch does, but onnx shape inference keeps them, so
    # ORT refuses to load any graph that combines that output with another tensor (even the
    # torch-exported forward model with a Linear after it).
    ("avgpool1d", (2, 3, 11), {"kernel_shape": [3], "strides": [2], "pads": [1, 1]},
     dict(kernel_size=3, stride=2, padding=1)),
]


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("shape,attrs,kwargs", [a[1:] for a in AVG], ids=[a[0] for a in AVG])
def test_average_pool(shape, attrs, kwargs, count_include_pad):
    pool = F.avg_pool1d if len(shape) == 3 else F.avg_pool2d
    check_node("AveragePool", {"x": randn(*shape)},
               lambda x: pool(x, count_include_pad=bool(count_include_pad), **kwargs),
               {**attrs, "count_include_pad": count_include_pad})


@pytest.mark.parametrize("shape", [(2, 3, 5, 6), (2, 3, 7)], ids=["2d", "1d"])
def test_global_average_pool(shape):
    axes = tuple(range(2, len(shape)))
    check_node("GlobalAveragePool", {"x": randn(*shape)}, lambda x: x.mean(axes, keepdim=True))


@pytest.mark.parametrize("shape", [(2, 3, 5, 6), (2, 3, 7)], ids=["2d", "1d"])
def test_global_max_pool(shape):
    axes = tuple(range(2, len(shape)))
    check_node("GlobalMaxPool", {"x": randn(*shape)}, lambda x: x.amax(axes, keepdim=True))


def test_global_max_pool_ties_route_to_one_element():
    """An all-zero post-ReLU map ties everywhere: the whole gradient goes to one element, as in
    torch's max_pool2d, not to every tied position."""
    x = randn(2, 3, 4, 4)
    x[0, 1] = 0.0
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("GlobalMaxPool", ["r"], ["y"])]
    check_graph(graph_model(nodes, {"x": x}), {"x": x},
                lambda t: F.max_pool2d(torch.relu(t), 4))
