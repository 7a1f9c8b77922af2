"""Independent torch (float64) implementations of methods.md sections 2-5, and tiny networks.

The oracle masks EVERY call of a ReLU module with a forward hook, so a module called twice (the
ResNet block's `self.relu`) gets two masks, as ONNX's per-node view does.
"""

from __future__ import annotations

import copy
import io
import warnings

import numpy as np
import onnx
import torch
from torch import nn


class TinyVGG(nn.Module):
    def __init__(self, classes: int = 5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16 * 8 * 8, 32), nn.ReLU(),
                                        nn.Linear(32, classes))

    def forward(self, x):
        return self.classifier(self.features(x))


class Block(nn.Module):
    """torchvision's BasicBlock shape: one ReLU module called twice."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.down is None else self.down(x)))


class TinyResNet(nn.Module):
    def __init__(self, classes: int = 5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8),
                                  nn.ReLU())
        self.blocks = nn.Sequential(Block(8, 8, 1), Block(8, 16, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


class TinyMobile(nn.Module):
    """MobileNetV2's pattern (ReLU6 after conv+BN, a depthwise conv, a linear bottleneck with a
    residual sum) mixed with ReLU, LeakyReLU and PReLU, as the ReLU-family default must mask
    all of them. The stem is scaled so that ReLU6 saturates at 6."""

    def __init__(self, classes: int = 5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8),
                                  nn.ReLU6())
        self.expand = nn.Sequential(nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16),
                                    nn.ReLU6())
        self.depthwise = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1, groups=16, bias=False),
                                       nn.BatchNorm2d(16), nn.LeakyReLU(0.1))
        self.project = nn.Sequential(nn.Conv2d(16, 8, 1, bias=False), nn.BatchNorm2d(8))
        self.head = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 16, 1),
                                  nn.PReLU(16))
        self.fc = nn.Sequential(nn.Linear(16, 12), nn.ReLU6(), nn.Linear(12, classes))
        with torch.no_grad():
            self.stem[0].weight.mul_(4.0)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.project(self.depthwise(self.expand(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.head(x), 1), 1))


# The ReLU family as torch modules: ReLU6 is Hardtanh(0, 6), exported as Clip(0, 6).
RELU_FAMILY_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU)


def is_relu_family(module: nn.Module) -> bool:
    if isinstance(module, nn.Hardtanh):
        return module.min_val == 0.0
    return isinstance(module, RELU_FAMILY_MODULES)


def randomise(kind: type[nn.Module], seed: int) -> nn.Module:
    """A `kind` network with seeded random weights and non-trivial BatchNorm statistics, in
    eval mode."""
    torch.manual_seed(seed)
    model = kind()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def export(model: nn.Module, size: int = 32, dynamic_batch: bool = True) -> onnx.ModelProto:
    buffer = io.BytesIO()
    axes = {"x": {0: "N"}, "logits": {0: "N"}} if dynamic_batch else None
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notices
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model.float(), (torch.zeros(1, 3, size, size),), buffer,
                          dynamo=False, input_names=["x"], output_names=["logits"],
                          dynamic_axes=axes, opset_version=17)
    return onnx.load_from_string(buffer.getvalue())


class ReluMasks:
    """Forward hooks multiplying the output of every ReLU-family call (ReLU, ReLU6, LeakyReLU,
    PReLU) by a per-call mask, on a float64 copy of the model (the caller's model is left
    alone)."""

    def __init__(self, model: nn.Module):
        self.model = copy.deepcopy(model).double()
        self.masks: list[torch.Tensor] | None = None  # set before a pass; None = record ones
        self.calls: list[torch.Tensor] = []
        self.handles = [m.register_forward_hook(self.hook) for m in self.model.modules()
                        if is_relu_family(m)]

    def hook(self, module, inputs, output):
        k = len(self.calls)
        fresh = self.masks is None  # scoring: ones that autograd can differentiate
        mask = torch.ones_like(output, requires_grad=True) if fresh else self.masks[k]
        self.calls.append(mask)
        return output * mask

    def run(self, x: torch.Tensor, masks=None) -> torch.Tensor:
        self.masks, self.calls = masks, []
        return self.model(x)


def torch_contributions(model: nn.Module, x: np.ndarray, target: int) -> list[np.ndarray]:
    """Signed a * dy/da per ReLU call: d y / d m at m = 1."""
    hooks = ReluMasks(model)
    y = hooks.run(torch.tensor(x, dtype=torch.float64))[0, target]
    grads = torch.autograd.grad(y, hooks.calls)
    return [g[0].numpy() for g in grads]


def torch_integrated(model: nn.Module, x: np.ndarray, target: int,
                     steps: int = 10) -> list[np.ndarray]:
    """Section 5 directly: per layer, mean over alpha of d y / d m_l at m_l = alpha."""
    base = torch_contributions(model, x, target)
    hooks = ReluMasks(model)
    xt = torch.tensor(x, dtype=torch.float64)
    scores = []
    for k, shape in enumerate(b.shape for b in base):
        total = np.zeros(shape)
        for j in range(steps + 1):
            masks = [torch.ones((1, *b.shape), dtype=torch.float64) for b in base]
            masks[k] = torch.full((1, *shape), j / steps, dtype=torch.float64,
                                  requires_grad=True)
            y = hooks.run(xt, masks)[0, target]
            total += torch.autograd.grad(y, masks[k])[0][0].numpy()
        scores.append(total / (steps + 1))
    return scores


def torch_select(scores: list[np.ndarray], prune_percent: float) -> list[np.ndarray]:
    """Section 3 with numpy's percentile (a full sort is fine for an oracle)."""
    flat = np.concatenate([np.abs(s).ravel() for s in scores])
    t = np.percentile(flat, prune_percent)
    if np.mean(flat == 0) > prune_percent / 100:
        t = 0.0
    return [np.abs(s) > t for s in scores]


def torch_pathway_gradient(model: nn.Module, x: np.ndarray, target: int,
                           masks: list[np.ndarray]) -> np.ndarray:
    hooks = ReluMasks(model)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    fixed = [torch.tensor(m[None], dtype=torch.float64) for m in masks]
    y = hooks.run(xt, fixed)[0, target]
    return torch.autograd.grad(y, xt)[0][0].numpy()
