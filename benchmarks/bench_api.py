"""Gradient and pathway cost through the public API, as users call it.

    python benchmarks/bench_api.py [--models resnet50,vgg16] [--rounds 7] [--threads 2]

For each model (224x224, random weights, benchmarks/_models.py): ONNX Runtime's own forward
(session.run of the forward graph), `Explainer.attribute(x, "gradient", target=t)` and
`Explainer.attribute(x, "pathway", target=t)` (85% pruned, contribution selection), timed in
interleaved rounds (the selection's compiled pass built first, as a long run gets it, where
numba is installed; ONNXPATH_NO_JIT=1 times numpy's passes); prints the medians and the
medians of the rounds' ratios gradient/forward (target <= 3.0) and pathway/gradient (target
<= 2.3). Sessions are built before timing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _models import export, randomise_batchnorm, resnet50, vgg16  # noqa: E402

from onnxpath.explainer import Explainer  # noqa: E402
from onnxpath.pathways import host_route, selection_kernels  # noqa: E402
from onnxpath.pathways.network import MaskedNetwork  # noqa: E402

MODELS = {"resnet50": resnet50, "vgg16": vgg16}


def bench(name: str, folder: Path, rounds: int, threads: int) -> None:
    torch.manual_seed(0)
    path = export(randomise_batchnorm(MODELS[name]()), path=folder / f"{name}.onnx")
    explainer = Explainer(path, threads=threads, cache=False)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    t = int(explainer.predict(x).argmax())
    engine = explainer.engine(x.shape)
    forward, feeds = engine._forward, {engine.input_name: x}
    jobs = {"forward": lambda: forward.run(None, feeds),
            "gradient": lambda: explainer.attribute(x, "gradient", target=t),
            "pathway": lambda: explainer.attribute(x, "pathway", target=t)}
    for job in jobs.values():
        job()
    times = {k: [] for k in jobs}
    for _ in range(rounds):
        for k, job in jobs.items():
            start = time.perf_counter()
            job()
            times[k].append(time.perf_counter() - start)
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    grad = statistics.median(g / f for g, f in zip(times["gradient"], times["forward"],
                                                   strict=True))
    path_ = statistics.median(p / g for p, g in zip(times["pathway"], times["gradient"],
                                                    strict=True))
    print(f"{name:9s} forward {med['forward']:7.1f} ms  gradient {med['gradient']:7.1f} ms  "
          f"pathway {med['pathway']:7.1f} ms  gradient/forward {grad:.2f} (<= 3.0)  "
          f"pathway/gradient {path_:.2f} (<= 2.3)  load {os.getloadavg()[0]:.1f}")
    parts = pathway_parts(explainer, x, t, rounds)
    print(f"{'':9s} one pathway call: " + ", ".join(f"{k} {v:.1f} ms" for k, v in parts.items()))


def pathway_parts(explainer: Explainer, x: np.ndarray, target: int,
                  rounds: int) -> dict[str, float]:
    """Medians of the pieces of the method's pathway calls (the CPU's host route,
    `pathways/host_route.py`): the tap run, the selection with the gates, and the gated
    gradient, each timed inside the call."""
    times: dict[str, list[float]] = {"tap run": [], "selection": [], "gated gradient": []}

    def timed(key: str, fn):
        def run(*args, **kwargs):
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            times[key].append(time.perf_counter() - start)
            return out
        return run

    saved = host_route.contributions, host_route.prune_marks, MaskedNetwork.gated_gradient
    host_route.contributions = timed("tap run", saved[0])
    host_route.prune_marks = timed("selection", saved[1])
    MaskedNetwork.gated_gradient = timed("gated gradient", saved[2])
    try:
        for _ in range(rounds + 1):
            explainer.attribute(x, "pathway", target=target)
    finally:
        host_route.contributions, host_route.prune_marks, MaskedNetwork.gated_gradient = saved
    # (the first call warms up; one selection per image)
    return {k: statistics.median(v[1:]) * 1000 for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet50,vgg16")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    compiled = "compiled" if selection_kernels.KERNELS.kernels() else "numpy's"
    print(f"{args.threads} ORT threads, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}; medians of {args.rounds} interleaved rounds; "
          f"the selection's pass: {compiled}")
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models.split(","):
            bench(name, Path(folder), args.rounds, args.threads)


if __name__ == "__main__":
    main()
