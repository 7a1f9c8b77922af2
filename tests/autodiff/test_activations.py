"""Pointwise activations and Softmax against torch in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from onnxpath.autodiff import gradient_graph
from onnxpath.engine.gradient import GradientEngine
from onnxpath.errors import ModelError
from onnxpath.intake.model import normalise
from tests.oracle import check_node, node_model, randn, relative_error

X = randn(2, 3, 4, 5)
WIDE = 4 * randn(2, 3, 4, 5, seed=3)  # crosses ReLU6's upper bound


def scalar(value: float) -> np.ndarray:
    return np.asarray(value, dtype=np.float32)


POINTWISE = [
    ("relu", "Relu", {}, {}, F.relu),
    ("leaky_relu_default", "LeakyRelu", {}, {}, lambda x: F.leaky_relu(x, 0.01)),
    ("leaky_relu_0.2", "LeakyRelu", {"alpha": 0.2}, {}, lambda x: F.leaky_relu(x, 0.2)),
    ("sigmoid", "Sigmoid", {}, {}, torch.sigmoid),
    ("tanh", "Tanh", {}, {}, torch.tanh),
    ("relu6", "Clip", {}, {"lo": scalar(0.0), "hi": scalar(6.0)},
     lambda x, lo, hi: F.hardtanh(x, 0.0, 6.0)),
    ("clip_min_only", "Clip", {}, {"lo": scalar(0.5), "hi": None},
     lambda x, lo, hi: torch.clamp(x, min=0.5)),
    ("clip_max_only", "Clip", {}, {"lo": None, "hi": scalar(1.0)},
     lambda x, lo, hi: torch.clamp(x, max=1.0)),
    ("clip_no_bounds", "Clip", {}, {}, lambda x: x * 1.0),
    ("softplus", "Softplus", {}, {}, F.softplus),
    ("elu_default", "Elu", {}, {}, F.elu),
    ("elu_0.5", "Elu", {"alpha": 0.5}, {}, lambda x: F.elu(x, 0.5)),
    ("hard_sigmoid_default", "HardSigmoid", {}, {}, lambda x: torch.clamp(0.2 * x + 0.5, 0, 1)),
    ("hard_sigmoid_torch", "HardSigmoid", {"alpha": 1 / 6}, {}, F.hardsigmoid),
    ("hard_swish", "HardSwish", {}, {}, F.hardswish),
    ("erf", "Erf", {}, {}, torch.erf),
    ("prelu_channel_slope", "PRelu", {}, {"slope": randn(3, 1, 1, seed=5)},
     lambda x, s: torch.where(x > 0, x, s * x)),
]


@pytest.mark.parametrize("op_type,attrs,bounds,reference", [p[1:] for p in POINTWISE],
                         ids=[p[0] for p in POINTWISE])
def test_pointwise(op_type, attrs, bounds, reference):
    check_node(op_type, {"x": WIDE, **bounds}, reference, attrs, constants=list(bounds))


@pytest.mark.parametrize("shape,axis", [((2, 3, 4, 5), 1), ((2, 3, 4, 5), -1), ((2, 3, 4, 5), 0),
                                        ((2, 3, 4, 5), 2), ((2, 7), None)],
                         ids=["rank4_axis1", "rank4_last", "rank4_axis0", "rank4_axis2",
                              "rank2_default"])
def test_softmax(shape, axis):
    attrs = {} if axis is None else {"axis": axis}
    dim = -1 if axis is None else axis
    check_node("Softmax", {"x": randn(*shape)}, lambda x: torch.softmax(x, dim), attrs)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_opset20(approximate):
    check_node("Gelu", {"x": WIDE}, lambda x: F.gelu(x, approximate=approximate),
               {"approximate": approximate}, opset=20)


def test_prelu_slope_gradient():
    """A slope fed as a graph input gets its own (broadcast-summed) gradient too."""
    check_node("PRelu", {"x": X, "slope": randn(3, 1, 1, seed=5)},
               lambda x, s: torch.where(x > 0, x, s * x))


@pytest.mark.parametrize("axis", [1, -1, 0])
def test_log_softmax(axis):
    check_node("LogSoftmax", {"x": X}, lambda x: torch.log_softmax(x, axis), {"axis": axis})


@pytest.mark.parametrize("op_type", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis", [None, 2], ids=["default_axis1", "axis2"])
def test_softmax_opset11_through_normalise(op_type, axis):
    """Before opset 13 the op normalises over all axes from `axis` (default 1) on, jointly.
    normalise() upgrades the model first; the gradient must keep the old semantics."""
    attrs = {} if axis is None else {"axis": axis}
    start = 1 if axis is None else axis
    fn = torch.softmax if op_type == "Softmax" else torch.log_softmax
    x = X.copy()
    model = node_model(op_type, {"x": x}, attrs, opset=11)
    seed = randn(*x.shape, seed=9)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y = fn(xt.reshape(*x.shape[:start], -1), -1).reshape(x.shape)
    (y * torch.from_numpy(seed).double()).sum().backward()
    with pytest.raises(ModelError, match="opset >= 16"):
        gradient_graph(model, "y", ["x"])
    # keep_probabilities: differentiate the (log-)probabilities themselves, not their input.
    info = normalise(model, x.shape, keep_probabilities=True)
    _, grads, _ = GradientEngine(info).gradients(x, seed)
    assert relative_error(grads["x"], xt.grad.numpy()) <= 1e-4
