"""Integrated gradients, 50 Gauss-Legendre steps, zero baseline, on a ResNet-50 with random
weights: onnxpath (ONNX Runtime) against Captum's IntegratedGradients (PyTorch) on the same CPU.

Captum is swept over internal_batch_size and its best time is the reference. onnxpath is swept
too, and the script prints both best times, their ratio and this process's peak RSS.

    python benchmarks/bench_integrated_gradients.py [--size 224] [--repeats 2]

torch and captum are needed here only (test extras); torchvision is deliberately not used:
the network is defined below.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class Bottleneck(nn.Module):
    """torchvision's ResNet-50 v1.5 block: the stride sits on the 3x3 conv."""

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * 4
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu1, self.relu2, self.relu3 = nn.ReLU(), nn.ReLU(), nn.ReLU()
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu3(out + (x if self.down is None else self.down(x)))


class ResNet50(nn.Module):
    def __init__(self, classes: int = 1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        blocks, cin = [], 64
        for width, count, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for i in range(count):
                blocks.append(Bottleneck(cin, width, stride if i == 0 else 1))
                cin = width * 4
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights with non-trivial BatchNorm statistics, so the network is not near zero."""
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.1, 0.1)
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def export(model: nn.Module, size: int, path: Path) -> None:
    x = torch.zeros(1, 3, size, size)
    torch.onnx.export(model, (x,), str(path), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=17, dynamo=False)


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up: sessions, allocator arenas, oneDNN primitive caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--captum-batches", default="5,10,25")
    parser.add_argument("--onnxpath-batches", default="2,5,10")
    parser.add_argument("--skip-captum", action="store_true")
    args = parser.parse_args()

    from onnxpath.explainer import Explainer

    model = randomised(ResNet50())
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, args.size, args.size)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "resnet50.onnx"
        export(model, args.size, path)
        explainer = Explainer(path)
        target = int(explainer.predict(x).argmax())
        ours = {}
        for batch in (int(b) for b in args.onnxpath_batches.split(",")):
            ours[batch] = best_time(lambda b=batch: explainer.attribute(
                x, "integrated-gradients", target, steps=args.steps,
                internal_batch_size=b), args.repeats)
            print(f"onnxpath internal_batch_size={batch:3d}: {ours[batch]:.3f} s "
                  f"(peak RSS so far {peak_rss_mb():.0f} MB)", flush=True)
        ours_rss = peak_rss_mb()
    best_ours = min(ours, key=ours.get)
    print(f"onnxpath best: {ours[best_ours]:.3f} s at internal_batch_size={best_ours}; "
          f"peak RSS {ours_rss:.0f} MB (before Captum ran)")
    if args.skip_captum:
        return

    from captum.attr import IntegratedGradients

    torch.set_num_threads(torch.get_num_threads())
    ig = IntegratedGradients(model)
    xt = torch.from_numpy(x)
    theirs = {}
    for batch in (int(b) for b in args.captum_batches.split(",")):
        theirs[batch] = best_time(lambda b=batch: ig.attribute(
            xt, target=target, n_steps=args.steps, method="gausslegendre",
            internal_batch_size=b), args.repeats)
        print(f"captum   internal_batch_size={batch:3d}: {theirs[batch]:.3f} s", flush=True)
    best_theirs = min(theirs, key=theirs.get)
    print(f"captum best:   {theirs[best_theirs]:.3f} s at internal_batch_size={best_theirs}")
    print(f"speed-up (captum best / onnxpath best): {theirs[best_theirs] / ours[best_ours]:.2f}x")
    print(f"peak RSS of this process: {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
