"""Normalisation layers in inference mode against torch in float64, random statistics."""

from __future__ import annotations

import pytest
import torch.nn.functional as F

from tests.oracle import check_node, randn


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (2, 3), (2, 3, 7), (1, 3, 2, 3, 4)],
                         ids=["rank4", "rank2", "rank3", "rank5"])
@pytest.mark.parametrize("epsilon", [1e-5, 1e-3])
def test_batch_norm(shape, epsilon):
    c = shape[1]
    inputs = {"x": randn(*shape), "scale": randn(c, seed=1, low=0.5),
              "bias": randn(c, seed=2), "mean": randn(c, seed=3),
              "var": randn(c, seed=4, low=0.2)}

    def reference(x, scale, bias, mean, var):
        return F.batch_norm(x, mean, var, scale, bias, training=False, eps=epsilon)

    check_node("BatchNormalization", inputs, reference, {"epsilon": epsilon},
               constants=["scale", "bias", "mean", "var"])


@pytest.mark.parametrize("shape,axis", [((2, 5, 8), -1), ((2, 3, 4, 5), 1), ((2, 3, 4, 5), -2)],
                         ids=["tokens_last", "chw", "last_two"])
def test_layer_norm(shape, axis):
    normalised = shape[axis % len(shape):]
    inputs = {"x": randn(*shape), "scale": randn(*normalised, seed=1, low=0.5),
              "bias": randn(*normalised, seed=2)}
    check_node("LayerNormalization", inputs,
               lambda x, s, b: F.layer_norm(x, normalised, s, b, eps=1e-5),
               {"axis": axis, "epsilon": 1e-5}, constants=["scale", "bias"])


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (2, 3, 7)], ids=["2d", "1d"])
def test_instance_norm(shape):
    inputs = {"x": randn(*shape), "scale": randn(3, seed=1, low=0.5), "bias": randn(3, seed=2)}
    check_node("InstanceNormalization", inputs,
               lambda x, s, b: F.instance_norm(x, weight=s, bias=b, eps=1e-5),
               constants=["scale", "bias"])


def onnx_lrn(size: int, alpha: float, beta: float, bias: float):
    """LRN as the ONNX spec defines it: the window reaches floor((size-1)/2) channels back and
    ceil((size-1)/2) forward (torch's LocalResponseNorm does the opposite for even sizes)."""
    def reference(x):
        channels = x.shape[1]
        squares = (x * x).transpose(1, -1)
        padded = F.pad(squares, ((size - 1) // 2, size // 2)).transpose(1, -1)
        window = sum(padded[:, i:i + channels] for i in range(size))
        return x / (bias + alpha / size * window) ** beta
    return reference


# ONNX Runtime's LRN kernel accepts odd sizes only.
@pytest.mark.parametrize("size,alpha,beta,bias", [(3, 1e-4, 0.75, 1.0), (1, 0.1, 0.75, 2.0),
                                                  (5, 0.5, 0.5, 1.0), (13, 0.5, 0.75, 1.0)],
                         ids=["size3_default", "size1", "size5_strong",
                              "size13_wider_than_channels"])
def test_lrn(size, alpha, beta, bias):
    check_node("LRN", {"x": randn(2, 6, 3, 4)}, onnx_lrn(size, alpha, beta, bias),
               {"size": size, "alpha": alpha, "beta": beta, "bias": bias})
