"""Cost of the pathway gradient against one plain gradient, on ResNet-50 at 224x224.

    python benchmarks/bench_pathway.py [--repeats 5] [--threads 2] [--skip-learned]

Prints: the number of masked layers and neurons; the median time of one gradient (forward +
backward, original model); of the pathway method (scoring pass + global percentile selection +
masked gradient pass) and of each of its parts; the ratio pathway / gradient; the selection's
share of the whole. Then the time of the `learned` selection (1000 SGD steps) on ResNet-18.
ResNet-50/18 come from benchmarks/_models.py (torch, torchvision's layout, random weights),
exported once to a temporary file. One-time costs (export, surgery, session builds) are
reported separately and not counted in the ratio.
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

from _models import export, randomise_batchnorm, resnet18, resnet50  # noqa: E402

from onnxpath.explainer import Explainer  # noqa: E402
from onnxpath.methods.pathway import critical_pathway, pathway, pathway_gradient  # noqa: E402
from onnxpath.pathways.learned_gates import learned_gates  # noqa: E402
from onnxpath.pathways.network import contributions, masked_network  # noqa: E402
from onnxpath.pathways.selection import select  # noqa: E402


def export_model(model, path: Path) -> float:
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export(randomise_batchnorm(model), path=path)
    return time.perf_counter() - start


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_pathway(folder: Path, repeats: int, threads: int) -> None:
    path = folder / "resnet50.onnx"
    torch.manual_seed(0)
    print(f"ResNet-50 export: {export_model(resnet50(), path):.1f} s")
    explainer = Explainer(path, threads=threads)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    engine = explainer.engine(x.shape)
    target = [int(engine.logits(x).argmax())]
    seed = engine.seed(target)

    start = time.perf_counter()
    engine.gradients(x, seed)
    print(f"gradient session build + first run: {time.perf_counter() - start:.2f} s")
    start = time.perf_counter()
    net = masked_network(engine)
    surgery = time.perf_counter() - start
    start = time.perf_counter()
    pathway(engine, x, target)
    print(f"surgery: {surgery:.2f} s; pathway session build + first run: "
          f"{time.perf_counter() - start:.2f} s")
    print(f"masked layers: {len(net.layers)}, neurons: {net.neurons:,}")

    _, signed, _ = contributions(net, x, target)
    scores = [np.abs(s) for s in signed]
    found = critical_pathway(engine, x, target)
    parts = {  # timed round-robin, so that load from other processes hits all alike
        "gradient": lambda: engine.gradients(x, seed),
        "whole": lambda: pathway(engine, x, target),
        "scoring": lambda: contributions(net, x, target),
        "selection": lambda: select(scores, 85.0),
        "masked": lambda: pathway_gradient(found, x, target),
    }
    times = {name: [] for name in parts}
    for _ in range(repeats):
        for name, fn in parts.items():
            times[name].append(median_time(fn, 1))
    t = {name: statistics.median(v) for name, v in times.items()}
    best = {name: min(v) for name, v in times.items()}
    rows = [("one gradient (forward+backward)", "gradient"),
            ("pathway gradient (whole method)", "whole"),
            ("  scoring pass (d logit / d masks)", "scoring"),
            ("  global percentile selection", "selection"),
            ("  masked gradient pass", "masked")]
    print(f"{'':38s} {'median':>9s} {'min':>9s}")
    for label, name in rows:
        print(f"{label:38s} {t[name] * 1000:7.1f}ms {best[name] * 1000:7.1f}ms")
    ratios = [w / g for w, g in zip(times["whole"], times["gradient"], strict=True)]
    print(f"ratio pathway / gradient: median of rounds {statistics.median(ratios):.2f}x, "
          f"of medians {t['whole'] / t['gradient']:.2f}x, of minima "
          f"{best['whole'] / best['gradient']:.2f}x  (target <= 2.3x)")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"selection share of the whole: {100 * t['selection'] / t['whole']:.1f}% of medians, "
          f"{100 * best['selection'] / best['whole']:.1f}% of minima  (target <= 10%)")


def bench_learned(folder: Path, threads: int, iterations: int) -> None:
    path = folder / "resnet18.onnx"
    torch.manual_seed(0)
    print(f"\nResNet-18 export: {export_model(resnet18(), path):.1f} s")
    explainer = Explainer(path, threads=threads)
    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
    engine = explainer.engine(x.shape)
    net = masked_network(engine)
    logits = engine.logits(x)
    learned_gates(net, x, logits, iterations=1)  # builds the cross-entropy session
    start = time.perf_counter()
    gates = learned_gates(net, x, logits, iterations=iterations)
    elapsed = time.perf_counter() - start
    seed = engine.seed([int(logits.argmax())])
    step = median_time(lambda: net.engine.gradients(x, seed, wrt=net.mask_names,
                                                    feeds=net.feeds(net.ones(1))), 5)
    kept = int(net.logits(x, gates).argmax()) == int(logits.argmax())
    print(f"learned selection on ResNet-18 ({len(net.layers)} layers, {net.neurons:,} gates): "
          f"{iterations} steps in {elapsed:.1f} s ({elapsed / iterations * 1000:.1f} ms/step; "
          f"one fwd+bwd w.r.t. masks alone {step * 1000:.1f} ms); class kept: {kept}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--skip-learned", action="store_true")
    parser.add_argument("--skip-pathway", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        if not args.skip_pathway:
            bench_pathway(Path(folder), args.repeats, args.threads)
        if not args.skip_learned:
            bench_learned(Path(folder), args.threads, args.iterations)


if __name__ == "__main__":
    main()
