"""Tiny torch networks for the Captum comparisons, exported to ONNX by the tests themselves.

`ResidualNet` exercises the ops of a ResNet (BatchNorm, a strided conv, MaxPool, a residual sum,
global pooling); `VGGNet` uses each nn.ReLU module exactly once, which Captum's hook-based
GuidedBackprop, Deconvolution and LayerGradCam need.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class ResidualNet(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8),
                                  nn.ReLU(), nn.MaxPool2d(2))
        self.conv1 = nn.Conv2d(8, 16, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.down = nn.Sequential(nn.Conv2d(8, 16, 1, 2, bias=False), nn.BatchNorm2d(16))
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        x = self.stem(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)) + self.down(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


class VGGNet(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
            nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class CaptumReLU6(nn.ReLU):
    """nn.ReLU6's function in an nn.ReLU subclass: Captum's GuidedBackprop and Deconvolution hook
    nn.ReLU modules only (stock nn.ReLU6 and nn.LeakyReLU get the plain gradient), so the
    subclass is how Captum's own hook becomes the oracle for the other ReLU-family ops."""

    def forward(self, x):
        return nn.functional.relu6(x)


class CaptumLeakyReLU(nn.ReLU):
    def forward(self, x):
        return nn.functional.leaky_relu(x, 0.1)


class CaptumPReLU(nn.ReLU):
    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(0.05, 0.3, channels))

    def forward(self, x):
        return nn.functional.prelu(x, self.weight)


class ReLUFamilyNet(nn.Module):
    """Every ReLU-family activation (ReLU6 -> Clip(0, 6), LeakyRelu, PRelu, Relu), each module
    used once, plus a hardtanh Clip(-1, 1) that is not ReLU-like and keeps its plain gradient
    both in Captum and in onnxpath. The first conv is scaled so that ReLU6 saturates."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), CaptumReLU6(), nn.Conv2d(8, 8, 3, padding=1),
            CaptumLeakyReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1),
            CaptumPReLU(16), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1), nn.Hardtanh(-1.0, 1.0))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(16, 32), CaptumReLU6(), nn.Linear(32, classes))
        with torch.no_grad():
            self.features[0].weight.mul_(6.0)

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def build(cls, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = cls()
    for m in model.modules():  # non-trivial BatchNorm, so eval mode is not an identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            nn.init.uniform_(m.weight, 0.5, 1.5)
    return model.eval()


def export(model: nn.Module, path: Path, size: int = 32) -> Path:
    torch.onnx.export(model, (torch.zeros(1, 3, size, size),), str(path), dynamo=False,
                      opset_version=17, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return path
