"""Integrated gradients, 50 Gauss-Legendre steps, zero baseline, on a ResNet-50 with random
weights: onnxpath (ONNX Runtime) against Captum's IntegratedGradients (PyTorch) on the same CPU.

Both are swept over internal_batch_size, in interleaved rounds so that both see the same
background load; the best time of each is kept. The script prints both best times, their
ratio, and the peak RSS of a separate process that runs onnxpath's IG alone.

    python benchmarks/bench_integrated_gradients.py [--size 224] [--repeats 3]

torch and captum are needed here only (test extras); the network is benchmarks/_models.py's
ResNet-50 (torchvision's layout, defined in torch: torchvision is not a dependency).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _models import export, randomise_batchnorm, resnet50  # noqa: E402


def timed(fn) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def onnxpath_peak_rss(path: Path, size: int, steps: int, batch: int) -> float:
    """Peak RSS (MB) of a fresh process that loads the model and runs IG once: onnxpath's
    own footprint, without torch, Captum or the export in the same address space."""
    # VmHWM, not ru_maxrss: a child's ru_maxrss starts from its parent's at fork, and this
    # parent holds torch, Captum and the model.
    code = (f"import re, numpy as np; from onnxpath.explainer import Explainer; "
            f"x = np.random.default_rng(0).standard_normal((1, 3, {size}, {size}))"
            f".astype(np.float32); Explainer({str(path)!r}).attribute(x, "
            f"'integrated-gradients', steps={steps}, internal_batch_size={batch}); "
            f"print(int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())"
            f"[1]) / 1024)")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                          text=True, check=True)
    return float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--captum-batches", default="5,10,25")
    parser.add_argument("--onnxpath-batches", default="2,5,10")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads for both ONNX Runtime and torch (default: each "
                             "library's own, the core count); 1 is robust on a busy machine")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from captum.attr import IntegratedGradients

    from onnxpath.explainer import Explainer

    torch.manual_seed(0)
    model = randomise_batchnorm(resnet50()).eval()
    x = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size)).astype(np.float32)
    xt = torch.from_numpy(x)
    ig = IntegratedGradients(model)
    ours_batches = [int(b) for b in args.onnxpath_batches.split(",")]
    their_batches = [int(b) for b in args.captum_batches.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        path = export(model, args.size, Path(tmp) / "resnet50.onnx")
        explainer = Explainer(path, threads=args.threads)
        target = int(explainer.predict(x).argmax())
        runs = {("onnxpath", b): lambda b=b: explainer.attribute(
                    x, "integrated-gradients", target, steps=args.steps, internal_batch_size=b)
                for b in ours_batches}
        runs.update({("captum", b): lambda b=b: ig.attribute(
                         xt, target=target, n_steps=args.steps, method="gausslegendre",
                         internal_batch_size=b)
                     for b in their_batches})
        for fn in runs.values():  # warm-up: sessions, arenas, oneDNN primitive caches
            fn()
        # Interleaved rounds, best of each: both stacks see the same background load.
        times: dict[tuple, list[tuple[float, float]]] = {key: [] for key in runs}
        for round_ in range(args.repeats):
            for key, fn in runs.items():
                times[key].append(timed(fn))
            print(f"round {round_ + 1}: " + ", ".join(
                f"{k[0]}[{k[1]}]={v[-1][0]:.2f}s (cpu {v[-1][1]:.2f}s)"
                for k, v in times.items()), flush=True)
        best = {key: min(w for w, _ in v) for key, v in times.items()}
        cpu = {key: min(c for _, c in v) for key, v in times.items()}
        ours = min((k for k in best if k[0] == "onnxpath"), key=best.get)
        theirs = min((k for k in best if k[0] == "captum"), key=best.get)
        # Twice: at the benchmark's steps and at 4x as many, to show memory does not grow
        # with the number of steps (it is bounded by internal_batch_size).
        rss = {n: onnxpath_peak_rss(path, args.size, n, ours[1])
               for n in (args.steps, 4 * args.steps)}
    print(f"onnxpath best: {best[ours]:.3f} s at internal_batch_size={ours[1]} "
          f"(cpu {cpu[ours]:.3f} s)")
    print(f"captum best:   {best[theirs]:.3f} s at internal_batch_size={theirs[1]} "
          f"(cpu {cpu[theirs]:.3f} s)")
    print(f"speed-up (captum best / onnxpath best): {best[theirs] / best[ours]:.2f}x wall, "
          f"{cpu[theirs] / cpu[ours]:.2f}x cpu")
    for n, mb in rss.items():
        print(f"onnxpath peak RSS, separate process, internal_batch_size={ours[1]}, "
              f"{n} steps: {mb:.0f} MB")


if __name__ == "__main__":
    main()
