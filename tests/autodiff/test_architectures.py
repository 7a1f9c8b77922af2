"""Whole classifiers, defined in torch with random weights and randomised BatchNorm statistics,
exported to ONNX, and differentiated end to end through normalise() and GradientEngine.

Batch of 2, one-hot seeds for two different classes; torch autograd in float64 is the oracle.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.oracle import check_module, randomise_batchnorm


def conv_bn(c_in: int, c_out: int, k: int = 3, stride: int = 1, groups: int = 1) -> list:
    return [nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out)]


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(*conv_bn(c_in, c_out, 3, stride), nn.ReLU(),
                                  *conv_bn(c_out, c_out))
        self.downsample = nn.Sequential(*conv_bn(c_in, c_out, 1, stride)) \
            if stride != 1 or c_in != c_out else nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.body(x) + self.downsample(x))


class Bottleneck(nn.Module):
    def __init__(self, c_in: int, width: int, stride: int = 1, expansion: int = 2):
        super().__init__()
        c_out = width * expansion
        self.body = nn.Sequential(*conv_bn(c_in, width, 1), nn.ReLU(),
                                  *conv_bn(width, width, 3, stride), nn.ReLU(),
                                  *conv_bn(width, c_out, 1))
        self.downsample = nn.Sequential(*conv_bn(c_in, c_out, 1, stride))
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.body(x) + self.downsample(x))


def resnet() -> nn.Module:
    return nn.Sequential(*conv_bn(3, 8), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
                         BasicBlock(8, 8), BasicBlock(8, 12, stride=2), Bottleneck(12, 6, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 10))


class VGG(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Conv2d(8, 12, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Linear(12 * 4 * 4, 32), nn.ReLU(), nn.Dropout(),
                                        nn.Linear(32, 10))

    def forward(self, x):
        # view(size(0), -1) with a dynamic batch exports Shape/Gather/Concat/Reshape.
        return self.classifier(self.features(x).view(x.size(0), -1))


class DenseLayer(nn.Module):
    def __init__(self, c_in: int, growth: int):
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(c_in), nn.ReLU(),
                                  nn.Conv2d(c_in, 2 * growth, 1, bias=False),
                                  nn.BatchNorm2d(2 * growth), nn.ReLU(),
                                  nn.Conv2d(2 * growth, growth, 3, padding=1, bias=False))

    def forward(self, x):
        return torch.cat([x, self.body(x)], 1)


def densenet(growth: int = 4) -> nn.Module:
    def block(c: int, layers: int) -> list:
        return [DenseLayer(c + i * growth, growth) for i in range(layers)]

    c = 8
    transition = [nn.BatchNorm2d(c + 3 * growth), nn.ReLU(),
                  nn.Conv2d(c + 3 * growth, c, 1, bias=False), nn.AvgPool2d(2)]
    return nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), *block(c, 3), *transition,
                         *block(c, 2), nn.BatchNorm2d(c + 2 * growth), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c + 2 * growth, 10))


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, expand: int):
        super().__init__()
        hidden = c_in * expand
        layers = [] if expand == 1 else [*conv_bn(c_in, hidden, 1), nn.ReLU6()]
        layers += [*conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6(),
                   *conv_bn(hidden, c_out, 1)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


def mobilenet_v2() -> nn.Module:
    return nn.Sequential(*conv_bn(3, 8, 3, 2), nn.ReLU6(), InvertedResidual(8, 8, 1, 1),
                         InvertedResidual(8, 12, 2, 4), InvertedResidual(12, 12, 1, 4),
                         *conv_bn(12, 24, 1), nn.ReLU6(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Dropout(0.2), nn.Linear(24, 10))


ARCHITECTURES = [
    ("resnet", resnet, (2, 3, 16, 16), True),
    ("vgg", VGG, (2, 3, 16, 16), True),
    ("densenet", densenet, (2, 3, 16, 16), False),
    ("mobilenet_v2", mobilenet_v2, (2, 3, 16, 16), False),
]


@pytest.mark.parametrize("build,shape,dynamic_batch", [a[1:] for a in ARCHITECTURES],
                         ids=[a[0] for a in ARCHITECTURES])
def test_architecture(build, shape, dynamic_batch):
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = randomise_batchnorm(build(), generator)
    check_module(model, shape, classes=(3, 7), dynamic_batch=dynamic_batch)
