"""Resize against torch's F.interpolate in float64, through torch's own export (which picks the
matching coordinate_transformation_mode and nearest_mode), plus hand-built Resize nodes."""

from __future__ import annotations

import numpy as np
import pytest
import torch.nn.functional as F
from torch import nn

from tests.oracle import check_module, check_node, randn


class Interpolate(nn.Module):
    def __init__(self, **kwargs):
        super().__init__()
        self.kwargs = kwargs

    def forward(self, x):
        return F.interpolate(x, **self.kwargs)


INTERPOLATIONS = [
    ("nearest_x2", dict(scale_factor=2, mode="nearest")),
    ("nearest_size_5to8", dict(size=(8, 7), mode="nearest")),
    ("nearest_down", dict(size=(3, 2), mode="nearest")),
    ("bilinear_x2", dict(scale_factor=2, mode="bilinear", align_corners=False)),
    ("bilinear_align_corners", dict(size=(9, 7), mode="bilinear", align_corners=True)),
    ("bilinear_down", dict(size=(3, 3), mode="bilinear", align_corners=False)),
    ("bicubic", dict(size=(8, 9), mode="bicubic", align_corners=False)),
    ("linear_1d", dict(scale_factor=1.5, mode="linear", align_corners=False)),
]


@pytest.mark.parametrize("kwargs", [i[1] for i in INTERPOLATIONS],
                         ids=[i[0] for i in INTERPOLATIONS])
def test_interpolate(kwargs):
    shape = (2, 3, 6) if kwargs["mode"] == "linear" else (2, 3, 5, 4)
    check_module(Interpolate(**kwargs), shape)


def test_interpolate_dynamic_batch():
    check_module(Interpolate(scale_factor=2, mode="bilinear"), (2, 3, 5, 4), dynamic_batch=True)


RESIZES = [
    # id, attrs, scales over NCHW, torch equivalent
    ("linear_half_pixel", {"mode": "linear", "coordinate_transformation_mode": "half_pixel"},
     [1, 1, 2, 1.5], dict(scale_factor=(2, 1.5), mode="bilinear", align_corners=False)),
    ("nearest_asymmetric_floor", {"mode": "nearest", "coordinate_transformation_mode":
                                  "asymmetric", "nearest_mode": "floor"},
     [1, 1, 3, 2], dict(scale_factor=(3, 2), mode="nearest")),
    # torch cannot export nearest-exact at opset 17; it is half_pixel + round_prefer_ceil.
    ("nearest_half_pixel_round_ceil", {"mode": "nearest", "coordinate_transformation_mode":
                                       "half_pixel", "nearest_mode": "round_prefer_ceil"},
     [1, 1, 1.75, 0.5], dict(scale_factor=(1.75, 0.5), mode="nearest-exact")),
]


@pytest.mark.parametrize("attrs,scales,kwargs", [r[1:] for r in RESIZES],
                         ids=[r[0] for r in RESIZES])
def test_resize_node(attrs, scales, kwargs):
    inputs = {"x": randn(2, 3, 4, 4), "roi": None, "scales": np.asarray(scales, np.float32)}
    check_node("Resize", inputs, lambda x, *_: F.interpolate(x, **kwargs), attrs,
               constants=["scales"])
