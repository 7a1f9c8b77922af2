"""Integrated gradients, 50 Gauss-Legendre steps, zero baseline, on a ResNet-50 with random
weights: onnxpath (ONNX Runtime) against Captum's IntegratedGradients (PyTorch) on the same CPU.

Captum is swept over internal_batch_size and its best time is the reference. onnxpath is swept
too, and the script prints both best times, their ratio and this process's peak RSS.

    python benchmarks/bench_integrated_gradients.py [--size 224] [--repeats 2]

torch and captum are needed here only (test extras); the network is benchmarks/_models.py's
ResNet-50 (torchvision's layout, defined in torch: torchvision is not a dependency).
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _models import export, randomise_batchnorm, resnet50  # noqa: E402


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

    torch.manual_seed(0)
    model = randomise_batchnorm(resnet50()).eval()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, args.size, args.size)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = export(model, args.size, Path(tmp) / "resnet50.onnx")
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
