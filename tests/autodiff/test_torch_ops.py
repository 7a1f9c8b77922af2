"""The newly covered ops as torch exports them (opset 17, the TorchScript exporter's patterns),
each in a tiny model checked against torch autograd in float64: Einsum, PixelShuffle
(DepthToSpace), PixelUnshuffle (SpaceToDepth), cumsum, trigonometric functions, the smooth
activations, GroupNorm, LPPool, norms, topk, tril, gather/scatter, grid_sample."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from tests.oracle import check_module


class Lambda(torch.nn.Module):
    """A conv (so the input passes a real layer), then the op under test, then a linear head."""

    def __init__(self, fn, channels: int = 4):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(2, channels, 3, padding=1)
        self.fn = fn
        self.head = torch.nn.LazyLinear(3)

    def forward(self, x):
        y = self.fn(self.conv(x))
        return self.head(y.reshape(y.shape[0], -1))


def _scatter(t):
    index = torch.arange(t.shape[-1]).flip(0).expand_as(t)
    return torch.zeros_like(t).scatter(-1, index, t * 2.0) + t


def _spatial_transformer(t):
    """A grid predicted from the features themselves: the gradient reaches x through the
    sampled pixels and through the grid."""
    pooled = t.mean(dim=(2, 3))[:, :6]
    theta = torch.eye(2, 3, dtype=t.dtype) + 0.3 * torch.tanh(pooled).reshape(-1, 2, 3)
    return F.grid_sample(t, F.affine_grid(theta, list(t.shape), align_corners=False),
                         align_corners=False)


OPS = {
    "einsum": lambda t: torch.einsum("bchw,bcgw->bchg", t, t.tanh()),
    "pixel_shuffle": lambda t: F.pixel_shuffle(t, 2),
    "pixel_unshuffle": lambda t: F.pixel_unshuffle(t, 2),
    "cumsum": lambda t: torch.cumsum(t, dim=2),
    "trigonometric": lambda t: torch.sin(t) * torch.cos(t) + torch.atan(t) + torch.tan(0.3 * t),
    "selu_celu": lambda t: F.selu(t) + F.celu(t, 0.7),
    "mish_softsign": lambda t: F.mish(t) + F.softsign(t),
    "shrink": lambda t: F.hardshrink(t, 0.3) + F.softshrink(t, 0.2),
    "group_norm": lambda t: F.group_norm(t, 2),
    "lp_pool": lambda t: F.lp_pool2d(t, 2, 2),
    "norms": lambda t: t / t.norm(dim=1, keepdim=True) + t.abs().sum(1, keepdim=True),
    "logsumexp": lambda t: torch.logsumexp(t, dim=1, keepdim=True) * t,
    "prod": lambda t: torch.prod(t, dim=1, keepdim=True) + t,
    "topk": lambda t: torch.topk(t.flatten(2), 5, dim=-1).values,
    "tril": lambda t: torch.tril(t, diagonal=1),
    "gather_scatter": _scatter,
    "grid_sample": lambda t: F.grid_sample(
        t, torch.tanh(torch.linspace(-2, 2, 2 * 5 * 5 * 2, dtype=t.dtype).reshape(2, 5, 5, 2)),
        align_corners=False),
    "spatial_transformer": _spatial_transformer,
}


@pytest.mark.parametrize("name", list(OPS))
def test_torch_export(name):
    module = Lambda(OPS[name], channels=6 if name == "spatial_transformer" else 4)
    module(torch.zeros(2, 2, 6, 6))  # materialise the lazy head
    # torch exports affine_grid as AffineGrid, which needs opset 20
    error = check_module(module, (2, 2, 6, 6), opset=20 if name == "spatial_transformer" else 17)
    print(f"{name}: relative error {error:.2g}")
