"""Arithmetic with numpy broadcasting, both operands differentiated, against torch float64 and
(for a few rows) central finite differences on a float64 copy of the model."""

from __future__ import annotations

import operator

import pytest
from onnx import helper

from tests.oracle import check_graph, check_node, graph_model, randn

BINARY = {"Add": operator.add, "Sub": operator.sub, "Mul": operator.mul,
          "Div": operator.truediv}

SHAPES = [
    ("same", (2, 3, 4, 5), (2, 3, 4, 5)),
    ("rhs_channel", (2, 3, 4, 5), (3, 1, 1)),
    ("lhs_channel", (3, 1, 1), (2, 3, 4, 5)),
    ("both_ways", (2, 1, 4, 1), (1, 3, 1, 5)),
    ("rhs_scalar", (2, 3, 4), ()),
    ("lhs_lower_rank", (4,), (2, 3, 4)),
]


@pytest.mark.parametrize("a_shape,b_shape", [s[1:] for s in SHAPES], ids=[s[0] for s in SHAPES])
@pytest.mark.parametrize("op_type", BINARY)
def test_binary(op_type, a_shape, b_shape):
    # Divisors kept away from zero so the float32 quotient is well conditioned.
    b = randn(*b_shape, seed=1, low=0.5) if op_type == "Div" else randn(*b_shape, seed=1)
    check_node(op_type, {"a": randn(*a_shape), "b": b}, BINARY[op_type])


@pytest.mark.parametrize("op_type", BINARY)
def test_binary_finite_differences(op_type):
    b = randn(3, 1, seed=1, low=0.5)
    check_node(op_type, {"a": randn(2, 3, 4), "b": b}, None)


def test_binary_same_tensor_twice():
    """x * x: both adjoints land on one tensor and must be summed."""
    x = randn(2, 3, 4)
    model = graph_model([helper.make_node("Mul", ["x", "x"], ["y"])], {"x": x})
    check_graph(model, {"x": x}, lambda t: t * t)


@pytest.mark.parametrize("oracle", ["torch", "fd"])
def test_sum_three_inputs(oracle):
    inputs = {"a": randn(2, 3, 4), "b": randn(3, 1, seed=1), "c": randn(4, seed=2)}
    check_node("Sum", inputs, (lambda a, b, c: a + b + c) if oracle == "torch" else None)


@pytest.mark.parametrize("oracle", ["torch", "fd"])
def test_neg(oracle):
    check_node("Neg", {"x": randn(2, 3, 4)}, (lambda x: -x) if oracle == "torch" else None)
