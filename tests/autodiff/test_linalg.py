"""Gemm and MatMul gradients for every operand, against torch in float64."""

from __future__ import annotations

import pytest

from tests.oracle import check_node, randn


def torch_gemm(alpha: float, beta: float, trans_a: int, trans_b: int):
    def reference(a, b, c=None):
        y = alpha * ((a.T if trans_a else a) @ (b.T if trans_b else b))
        return y if c is None else y + beta * c
    return reference


GEMM = [
    # id, c shape (None: absent), alpha, beta
    ("c_row", (5,), 1.0, 1.0),
    ("c_full", (3, 5), 1.0, 1.0),
    ("c_1xN", (1, 5), 0.5, 2.0),
    ("c_Mx1", (3, 1), 1.0, -1.5),
    ("c_scalar", (), 2.0, 0.25),
    ("no_c", None, 1.5, 1.0),
]


@pytest.mark.parametrize("b_constant", [False, True], ids=["b_input", "b_weight"])
@pytest.mark.parametrize("trans_a,trans_b", [(0, 0), (0, 1), (1, 0), (1, 1)],
                         ids=["NN", "NT", "TN", "TT"])
@pytest.mark.parametrize("c_shape,alpha,beta", [g[1:] for g in GEMM], ids=[g[0] for g in GEMM])
def test_gemm(trans_a, trans_b, c_shape, alpha, beta, b_constant):
    inputs = {"a": randn(*((4, 3) if trans_a else (3, 4))),
              "b": randn(*((5, 4) if trans_b else (4, 5)), seed=1),
              "c": None if c_shape is None else randn(*c_shape, seed=2)}
    attrs = {"alpha": alpha, "beta": beta, "transA": trans_a, "transB": trans_b}
    check_node("Gemm", inputs, torch_gemm(alpha, beta, trans_a, trans_b), attrs,
               constants=["b"] if b_constant else [])


MATMUL = [
    ("2d", (3, 4), (4, 5)),
    ("batched_lhs", (2, 3, 4), (4, 5)),
    ("batched_both", (2, 3, 4), (2, 4, 5)),
    ("broadcast_batch", (2, 1, 3, 4), (3, 4, 5)),
    ("broadcast_batch_rhs", (3, 4), (2, 3, 4, 5)),
    ("vector_lhs", (4,), (2, 4, 5)),
    ("vector_rhs", (2, 3, 4), (4,)),
    ("vector_matrix", (4,), (4, 5)),
    ("vector_vector", (4,), (4,)),
]


@pytest.mark.parametrize("a_shape,b_shape", [m[1:] for m in MATMUL], ids=[m[0] for m in MATMUL])
def test_matmul(a_shape, b_shape):
    check_node("MatMul", {"a": randn(*a_shape), "b": randn(*b_shape, seed=1)},
               lambda a, b: a @ b)
