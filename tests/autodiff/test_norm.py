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
