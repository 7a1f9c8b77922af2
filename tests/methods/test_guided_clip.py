"""Guided backpropagation on a ReLU6 network (exported as Clip(x, 0, 6)), against torch in
float64 with the guided rule written as an autograd function: the gradient passes where
0 < x < 6 and only where it is positive."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import torch
from torch import nn
from torch_nets import export

from onnxpath.explainer import Explainer


class GuidedReLU6(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(0.0, 6.0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad.clamp(min=0.0) * ((x > 0) & (x < 6)).to(grad.dtype)


class Guided(nn.Module):
    def forward(self, x):
        return GuidedReLU6.apply(x)


def relu6_net() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU6(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU6(),
        nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU6(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))
    for m in model.modules():  # weights large enough that some units saturate at 6
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.8)
    return model.eval()


def oracle(model: nn.Module, x: np.ndarray, targets: np.ndarray) -> np.ndarray:
    guided = copy.deepcopy(model).double()
    for i, m in enumerate(guided):
        if isinstance(m, nn.ReLU6):
            guided[i] = Guided()
    xt = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
    out = guided(xt)
    out[torch.arange(len(x)), torch.from_numpy(targets)].sum().backward()
    return xt.grad.numpy()


def test_guided_backprop_on_clip_matches_the_guided_relu6_rule(tmp_path):
    model = relu6_net()
    x = np.random.default_rng(0).standard_normal((3, 3, 16, 16)).astype(np.float32) * 2
    with torch.no_grad():
        pre = model[:1](torch.from_numpy(x))
    assert (pre > 6).any() and (pre < 0).any()  # both edges of the clip are exercised
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explainer = Explainer(export(model, tmp_path / "relu6.onnx", size=16))
    result = explainer.attribute(x, "guided-backprop")
    expected = oracle(model, x, result.targets)
    error = np.abs(result.maps - expected).max() / np.abs(expected).max()
    print(f"\n[guided clip] max error / max |ref| = {error:.2e}")
    assert error < 1e-5
    plain = explainer.attribute(x, "gradient").maps
    assert np.abs(plain - expected).max() > 0.1 * np.abs(expected).max()
