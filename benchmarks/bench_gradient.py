"""Gradient-graph build time and forward+gradient cost against a plain ONNX Runtime forward.

    python benchmarks/bench_gradient.py [--model resnet50|resnet18] [--repeats 10]

Prints: graph build time (autodiff only, and with the ORT session), the plain forward time, the
forward+input-gradient time, their ratio, and torch autograd's forward+backward for reference.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _models import export, randomise_batchnorm, resnet18, resnet50  # noqa: E402

from onnxpath.engine.gradient import GradientEngine, cut_at  # noqa: E402
from onnxpath.intake.model import normalise  # noqa: E402
from onnxpath.ort.sessions import make_session  # noqa: E402


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="resnet50", choices=["resnet50", "resnet18"])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    net = randomise_batchnorm({"resnet50": resnet50, "resnet18": resnet18}[args.model]()).eval()
    path = export(net)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)

    start = time.perf_counter()
    info = normalise(onnx.load(str(path)), x.shape)
    engine = GradientEngine(info, threads=args.threads)
    graph = engine.gradient_model([info.input_name])
    autodiff_s = time.perf_counter() - start
    seed = engine.seed([3])
    engine.gradients(x, seed)  # builds the session
    build_s = time.perf_counter() - start

    forward = make_session(cut_at(info.proto, [info.logits]), threads=args.threads)
    # Interleaved rounds: whatever else loads the machine hits both sides of each ratio alike.
    rounds = []
    for _ in range(args.repeats):
        t_forward = best_of(lambda: forward.run(None, {info.input_name: x}), 3)
        t_grad = best_of(lambda: engine.gradients(x, seed), 3)
        rounds.append((t_forward, t_grad))
    t_forward = statistics.median(f for f, _ in rounds)
    t_grad = statistics.median(g for _, g in rounds)
    ratio = statistics.median(g / f for f, g in rounds)

    xt = torch.from_numpy(x)
    torch.set_num_threads(args.threads or torch.get_num_threads())

    def torch_grad():
        xi = xt.clone().requires_grad_()
        net(xi)[0, 3].backward()

    t_torch = best_of(torch_grad, max(3, args.repeats // 3))
    print(f"model                      {args.model} 1x3x224x224, "
          f"{len(info.proto.graph.node)} forward nodes, "
          f"{len(graph.graph.node) - len(info.proto.graph.node)} gradient nodes")
    print(f"autodiff build             {autodiff_s:.3f} s (normalise + gradient graph)")
    print(f"build incl. ORT session    {build_s:.3f} s")
    print(f"ORT forward                {t_forward * 1000:.1f} ms (median of rounds' best of 3)")
    print(f"ORT forward+gradient       {t_grad * 1000:.1f} ms")
    print(f"ratio gradient/forward     {ratio:.2f}x median of {args.repeats} rounds "
          f"(min {min(g / f for f, g in rounds):.2f}x, max {max(g / f for f, g in rounds):.2f}x;"
          f" target <= 3x); load average {os.getloadavg()[0]:.1f}")
    print(f"torch autograd fwd+bwd     {t_torch * 1000:.1f} ms "
          f"(onnxpath/torch {t_grad / t_torch:.2f}x)")


if __name__ == "__main__":
    main()
