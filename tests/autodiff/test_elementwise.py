"""Arithmetic with numpy broadcasting, both operands differentiated, against torch float64 and
(for a few rows) central finite differences on a float64 copy of the model."""

from __future__ import annotations

import operator

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper

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


UNARY = [
    ("sqrt", "Sqrt", torch.sqrt),
    ("exp", "Exp", torch.exp),
    ("log", "Log", torch.log),
    ("reciprocal", "Reciprocal", torch.reciprocal),
    ("abs", "Abs", torch.abs),
]


@pytest.mark.parametrize("op_type,reference", [u[1:] for u in UNARY], ids=[u[0] for u in UNARY])
def test_unary(op_type, reference):
    x = randn(2, 3, 4) if op_type in ("Exp", "Abs") else randn(2, 3, 4, low=0.3)
    check_node(op_type, {"x": x}, reference)


@pytest.mark.parametrize("exponent,constant", [
    (np.asarray(2.0, np.float32), True), (np.asarray(0.5, np.float32), True),
    (np.asarray(3, np.int64), True), (randn(3, 1, low=0.5, seed=1), False)],
    ids=["square", "sqrt", "int_cube", "exponent_input"])
def test_pow(exponent, constant):
    check_node("Pow", {"x": randn(2, 3, 4, low=0.3), "p": exponent}, lambda x, p: x ** p,
               constants=["p"] if constant else [])


VARIADIC = {"Max": torch.maximum, "Min": torch.minimum}


@pytest.mark.parametrize("op_type", ["Max", "Min", "Mean"])
def test_variadic_broadcast(op_type):
    inputs = {"a": randn(2, 3, 4), "b": randn(3, 1, seed=1), "c": randn(4, seed=2)}

    def reference(a, b, c):
        if op_type == "Mean":
            return (a + b + c) / 3
        return VARIADIC[op_type](VARIADIC[op_type](a, b), c)

    check_node(op_type, inputs, reference)


@pytest.mark.parametrize("op_type", ["Max", "Min"])
def test_binary_extremum_ties_split(op_type):
    """Tied inputs share the gradient (torch.maximum halves it), never double it."""
    a = randn(2, 6)
    b = a.copy()
    b[:, ::2] = randn(2, 3, seed=1)
    check_node(op_type, {"a": a, "b": b}, VARIADIC[op_type])


def test_where_broadcast():
    condition = np.random.default_rng(0).random((2, 3, 4)) > 0.5
    inputs = {"c": condition, "a": randn(3, 4), "b": randn(2, 1, 4, seed=1)}
    check_node("Where", inputs, lambda c, a, b: torch.where(c, a, b))


def test_cast_float_round_trip():
    x = randn(2, 3)
    nodes = [helper.make_node("Cast", ["x"], ["d"], to=TensorProto.DOUBLE),
             helper.make_node("Mul", ["d", "d"], ["d2"]),
             helper.make_node("Cast", ["d2"], ["y"], to=TensorProto.FLOAT)]
    check_graph(graph_model(nodes, {"x": x}), {"x": x}, lambda t: t * t)


@pytest.mark.parametrize("op_type", ["Floor", "Ceil", "Round", "Sign"])
def test_piecewise_constant_ops_pass_no_gradient(op_type):
    x = randn(2, 3)
    nodes = [helper.make_node(op_type, ["x"], ["q"]), helper.make_node("Add", ["x", "q"], ["y"])]
    fn = {"Floor": torch.floor, "Ceil": torch.ceil, "Round": torch.round, "Sign": torch.sign}
    check_graph(graph_model(nodes, {"x": x}), {"x": x}, lambda t: t + fn[op_type](t))
