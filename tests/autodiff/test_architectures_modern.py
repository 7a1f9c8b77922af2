"""Issue #3 architectures in torch, random weights, exported and differentiated end to end:
SqueezeNet, ShuffleNet, MobileNetV3, EfficientNet, ConvNeXt, a tiny ViT, AlexNet/GoogLeNet with
LRN, and a legacy opset-9 IR-3 export with its initializers listed as graph inputs."""

from __future__ import annotations

import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.autodiff.test_architectures import conv_bn, resnet
from tests.oracle import check_module, randomise_batchnorm


class Fire(nn.Module):
    def __init__(self, c_in: int, squeeze: int, expand: int):
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(c_in, squeeze, 1), nn.ReLU())
        self.expand1 = nn.Sequential(nn.Conv2d(squeeze, expand, 1), nn.ReLU())
        self.expand3 = nn.Sequential(nn.Conv2d(squeeze, expand, 3, padding=1), nn.ReLU())

    def forward(self, x):
        s = self.squeeze(x)
        return torch.cat([self.expand1(s), self.expand3(s)], 1)


def squeezenet() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(),
                         nn.MaxPool2d(3, 2, ceil_mode=True), Fire(8, 4, 6), Fire(12, 4, 6),
                         nn.Dropout(), nn.Conv2d(12, 10, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten())


def channel_shuffle(x, groups: int):
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit: split channels, transform one half, concat, shuffle."""

    def __init__(self, c: int):
        super().__init__()
        half = c // 2
        self.branch = nn.Sequential(*conv_bn(half, half, 1), nn.ReLU(),
                                    *conv_bn(half, half, 3, groups=half),
                                    *conv_bn(half, half, 1), nn.ReLU())

    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat([a, self.branch(b)], 1), 2)


def shufflenet() -> nn.Module:
    return nn.Sequential(*conv_bn(3, 8, 3, 2), nn.ReLU(), ShuffleUnit(8), ShuffleUnit(8),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, hidden: int, gate: nn.Module, act: nn.Module):
        super().__init__()
        self.fc = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, hidden, 1), act,
                                nn.Conv2d(hidden, c, 1), gate)

    def forward(self, x):
        return x * self.fc(x)


class MBConv(nn.Module):
    """Inverted residual with squeeze-excitation: MobileNetV3 (hardswish, hardsigmoid gate)
    or EfficientNet (SiLU written as x * sigmoid(x), sigmoid gate)."""

    def __init__(self, c_in: int, c_out: int, stride: int, act: type[nn.Module],
                 gate: type[nn.Module]):
        super().__init__()
        hidden = 3 * c_in
        self.body = nn.Sequential(*conv_bn(c_in, hidden, 1), act(),
                                  *conv_bn(hidden, hidden, 3, stride, groups=hidden), act(),
                                  SqueezeExcite(hidden, 4, gate(), act()),
                                  *conv_bn(hidden, c_out, 1))
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class SiLU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


def mobilenet_v3() -> nn.Module:
    return nn.Sequential(*conv_bn(3, 8, 3, 2), nn.Hardswish(),
                         MBConv(8, 8, 1, nn.Hardswish, nn.Hardsigmoid),
                         MBConv(8, 12, 2, nn.ReLU, nn.Hardsigmoid), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(12, 16), nn.Hardswish(), nn.Linear(16, 10))


def efficientnet() -> nn.Module:
    return nn.Sequential(*conv_bn(3, 8, 3, 2), SiLU(), MBConv(8, 8, 1, SiLU, nn.Sigmoid),
                         MBConv(8, 12, 2, SiLU, nn.Sigmoid), *conv_bn(12, 16, 1), SiLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


class ConvNeXtBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.dwconv = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.pwconv1 = nn.Linear(c, 4 * c)
        self.pwconv2 = nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(0.5 + torch.rand(c))

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)  # channels last
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))  # GELU exports as Erf
        return x + (self.gamma * y).permute(0, 3, 1, 2)


def convnext() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), ConvNeXtBlock(8), ConvNeXtBlock(8),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LayerNorm(8),
                         nn.Linear(8, 10))


class Attention(nn.Module):
    """Multi-head self-attention written out with MatMul and Softmax."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        n, t, d = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        weights = torch.softmax(q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5, dim=-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(n, t, d))


class TinyViT(nn.Module):
    def __init__(self, dim: int = 16, patch: int = 4, size: int = 16, heads: int = 2):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim))
        self.position = nn.Parameter(0.1 * torch.randn(1, (size // patch) ** 2 + 1, dim))
        self.norm1, self.norm2, self.norm = nn.LayerNorm(dim), nn.LayerNorm(dim), \
            nn.LayerNorm(dim)
        self.attention = Attention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], 1) + self.position
        tokens = tokens + self.attention(self.norm1(tokens))
        tokens = tokens + self.mlp(self.norm2(tokens))
        return self.head(self.norm(tokens)[:, 0])


def alexnet_lrn() -> nn.Module:
    """AlexNet/GoogLeNet-style stem: conv, ReLU, LocalResponseNorm, overlapping max pools."""
    return nn.Sequential(nn.Conv2d(3, 8, 5, stride=2, padding=2), nn.ReLU(),
                         nn.LocalResponseNorm(5, alpha=1e-2, beta=0.75, k=2.0),
                         nn.MaxPool2d(3, 2), nn.Conv2d(8, 12, 3, padding=1), nn.ReLU(),
                         nn.LocalResponseNorm(3), nn.MaxPool2d(3, 2, ceil_mode=True),
                         nn.Flatten(), nn.Linear(12 * 2 * 2, 10))


ARCHITECTURES = [
    ("squeezenet", squeezenet, (2, 3, 24, 24)),
    ("shufflenet", shufflenet, (2, 3, 16, 16)),
    ("mobilenet_v3", mobilenet_v3, (2, 3, 16, 16)),
    ("efficientnet", efficientnet, (2, 3, 16, 16)),
    ("convnext", convnext, (2, 3, 16, 16)),
    ("vit", TinyViT, (2, 3, 16, 16)),
    ("alexnet_lrn", alexnet_lrn, (2, 3, 20, 20)),
]


@pytest.mark.parametrize("build,shape", [a[1:] for a in ARCHITECTURES],
                         ids=[a[0] for a in ARCHITECTURES])
def test_architecture(build, shape):
    torch.manual_seed(0)
    model = randomise_batchnorm(build(), torch.Generator().manual_seed(0))
    check_module(model, shape, classes=(3, 7))


def legacy_ir3(model: onnx.ModelProto) -> onnx.ModelProto:
    """What old converters wrote: IR 3, every initializer also listed as a graph input."""
    existing = {i.name for i in model.graph.input}
    model.graph.input.extend(
        onnx.helper.make_tensor_value_info(i.name, i.data_type, list(i.dims))
        for i in model.graph.initializer if i.name not in existing)
    model.ir_version = 3
    return model


def test_opset9_ir3_model_with_initializers_as_inputs():
    torch.manual_seed(0)
    model = randomise_batchnorm(resnet(), torch.Generator().manual_seed(0))
    check_module(model, (2, 3, 16, 16), classes=(1, 4), opset=9, model_hook=legacy_ir3)
