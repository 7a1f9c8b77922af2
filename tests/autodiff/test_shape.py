"""Ops that only move elements: the gradient must move them back, element for element."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import helper

from tests.oracle import check_graph, check_node, graph_model, randn

X = randn(2, 3, 4, 5)


def ints(*values: int) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


MOVES = [
    ("flatten_axis1", "Flatten", {}, {}, lambda x: x.reshape(2, -1)),
    ("flatten_axis2", "Flatten", {"axis": 2}, {}, lambda x: x.reshape(6, 20)),
    ("flatten_axis0", "Flatten", {"axis": 0}, {}, lambda x: x.reshape(1, -1)),
    ("reshape_minus1", "Reshape", {}, {"s": ints(2, -1, 5)}, lambda x, s: x.reshape(2, -1, 5)),
    ("reshape_zero", "Reshape", {}, {"s": ints(0, 0, 20)}, lambda x, s: x.reshape(2, 3, 20)),
    ("unsqueeze", "Unsqueeze", {}, {"a": ints(0, 3)}, lambda x, a: x[None, :, :, None]),
    ("transpose_default", "Transpose", {}, {}, lambda x: x.permute(3, 2, 1, 0)),
    ("transpose_nhwc", "Transpose", {"perm": [0, 2, 3, 1]}, {}, lambda x: x.permute(0, 2, 3, 1)),
    ("transpose_cycle", "Transpose", {"perm": [2, 0, 3, 1]}, {}, lambda x: x.permute(2, 0, 3, 1)),
    ("identity", "Identity", {}, {}, lambda x: x * 1.0),
    ("dropout_inference", "Dropout", {}, {}, lambda x: x * 1.0),
]


@pytest.mark.parametrize("op_type,attrs,extra,reference", [m[1:] for m in MOVES],
                         ids=[m[0] for m in MOVES])
def test_moves(op_type, attrs, extra, reference):
    check_node(op_type, {"x": X, **extra}, reference, attrs, constants=list(extra))


@pytest.mark.parametrize("axes,reference", [(ints(1), lambda x, a: x[:, 0]),
                                            (None, lambda x: x.reshape(3, 4)),
                                            (ints(-1, 0), lambda x, a: x.reshape(3, 4))],
                         ids=["axis1", "all", "negative"])
def test_squeeze(axes, reference):
    x = randn(1, 3, 4, 1) if axes is None or len(axes) == 2 else randn(2, 1, 4)
    inputs = {"x": x} if axes is None else {"x": x, "a": axes}
    check_node("Squeeze", inputs, reference, constants=["a"])


@pytest.mark.parametrize("axis", [1, -1, 0])
def test_concat(axis):
    """Three inputs, one of them a constant (like a cls token), one used twice."""
    a, b = randn(2, 3, 4), randn(2, 3, 4, seed=1)
    k = randn(2, 3, 4, seed=2)
    nodes = [helper.make_node("Concat", ["a", "k", "b", "a"], ["y"], axis=axis)]
    model = graph_model(nodes, {"a": a, "b": b, "k": k}, constants=["k"])
    check_graph(model, {"a": a, "b": b},
                lambda a, b, k: torch.cat([a, k, b, a], dim=axis), {"a": a, "b": b, "k": k})


def test_dropout_with_mask_output():
    nodes = [helper.make_node("Dropout", ["x"], ["y", "mask"])]
    check_graph(graph_model(nodes, {"x": X}), {"x": X}, lambda x: x * 1.0)
