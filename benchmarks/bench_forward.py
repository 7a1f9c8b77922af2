"""Forward-only methods and protocols against their forward-pass limit.

    python benchmarks/bench_forward.py [--model resnet18] [--size 112] [--rounds 3]

The limit of a run that pushes R perturbed rows through the model at batch size B is
R x (ONNX Runtime's own time per row at B): session.run on a ready buffer of B rows, nothing
else. Each round measures that per-row time first, then every method and protocol once, so
the ratio of a round divides two figures taken under the same load; the medians of the rounds'
ratios are printed (target <= 1.15). B is the batch size onnxpath picks for the model
(`batching.fastest_batch`, measured once), the one every method below runs with.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onnxpath.evaluate import perturbation, road, sensitivity  # noqa: E402
from onnxpath.explainer import Explainer  # noqa: E402

TARGET = 1.15


def own_time_per_row(engine, shape: tuple[int, ...], batch: int, repeats: int = 3) -> float:
    """ORT's own time per row at `batch`: the forward session on a preallocated buffer."""
    x = np.random.default_rng(1).standard_normal((batch, *shape)).astype(np.float32)
    engine.logits(x)  # builds the session, allocates for this batch size
    session, feeds = engine._forward, {engine.input_name: x}
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    return min(times) / batch


class Counting:
    """A forward function that counts the rows it runs, and the batch sizes it gets."""

    def __init__(self, explainer: Explainer):
        self.explainer, self.rows, self.sizes = explainer, 0, []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.rows += len(batch)
        self.sizes.append(len(batch))
        return self.explainer.predict(batch)


def workloads(explainer: Explainer, x: np.ndarray, batch: int, masks: int, window: int):
    """name -> (run it, number of forward rows it needs, the batch sizes it runs them in, or
    None where the method batches inside the Explainer). Method rows: one unperturbed run
    where the method makes one, plus the perturbed rows."""
    n, _, h, w = x.shape
    targets = explainer.predict(x).argmax(axis=1)
    heats = np.random.default_rng(2).standard_normal((n, h, w))
    starts = len(range(0, h - window + 1, window))
    jobs = {
        "occlusion": (lambda: explainer.attribute(x, "occlusion", target=targets, window=window,
                                                  stride=window), n + n * starts * starts,
                      None),
        "rise": (lambda: explainer.attribute(x, "rise", target=targets, masks=masks,
                                             cells=7), n * masks, None),
    }
    fractions = tuple(i / 10 for i in range(1, 10))
    protocols = {
        "lerf": lambda f: perturbation.pixel_perturbation(f, x, heats, targets, fractions,
                                                          "lerf", batch_size=batch),
        "morf": lambda f: perturbation.pixel_perturbation(f, x, heats, targets, fractions,
                                                          "morf", batch_size=batch),
        "deletion": lambda f: perturbation.deletion_insertion(f, x, heats, targets, "deletion",
                                                              step=h * w // 16,
                                                              batch_size=batch),
        "insertion": lambda f: perturbation.deletion_insertion(f, x, heats, targets,
                                                               "insertion", step=h * w // 16,
                                                               batch_size=batch),
        "road": lambda f: road.road(f, x, heats, targets, batch_size=batch),
        "road (Grad-CAM maps)": lambda f: road.road(f, x, smooth_maps(explainer, x, targets),
                                                    targets, batch_size=batch),
        "sensitivity-n": lambda f: sensitivity.output_drops(f, x, targets, (1, 16, 256),
                                                            samples=16, batch_size=batch),
    }
    for name, run in protocols.items():
        counter = Counting(explainer)
        run(counter)  # once, to count its rows
        jobs[name] = (lambda run=run: run(explainer.predict), counter.rows, counter.sizes)
    return jobs


def non_forward_work(explainer: Explainer, x: np.ndarray, batch: int) -> dict:
    """name -> the protocol run with a forward function that answers at once: the work it
    must do besides forward passes (ROAD: its noisy linear imputation, a sparse solve per
    image and fraction)."""
    n, _, h, w = x.shape
    targets = explainer.predict(x).argmax(axis=1)
    heats = np.random.default_rng(2).standard_normal((n, h, w))
    classes = explainer.predict(x[:1]).shape[1]

    def instant(rows: np.ndarray) -> np.ndarray:
        return np.zeros((len(rows), classes), np.float32)

    smooth = smooth_maps(explainer, x, targets)
    return {"road": lambda: road.road(instant, x, heats, targets, batch_size=batch),
            "road (Grad-CAM maps)": lambda: road.road(instant, x, smooth, targets,
                                                      batch_size=batch)}


def smooth_maps(explainer: Explainer, x: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The model's own Grad-CAM maps: smooth, so ROAD removes pixels in large holes, its
    imputation's hard case (random maps remove scattered pixels)."""
    maps = explainer.attribute(x, "gradcam", target=targets).maps
    return maps.reshape(len(x), -1, *x.shape[2:]).sum(axis=1)


def measure(explainer: Explainer, x: np.ndarray, rounds: int, masks: int,
            window: int) -> tuple[int, float, dict[str, tuple]]:
    """(batch size, median ORT time per row, {name: (rows, median seconds, median ratio,
    median ratio to the limit at its own batches or None, non-forward work alone or None,
    ratio against limit + that work or None)})."""
    batch = explainer.fastest_batch(x.shape)
    engine = explainer.engine(x.shape)
    jobs = workloads(explainer, x, batch, masks, window)
    beside = non_forward_work(explainer, x, batch)
    for run, _, _ in jobs.values():
        run()  # warm: sessions, buffers
    sizes = sorted({b for _, _, used in jobs.values() for b in used or ()} | {batch})
    per_row, seconds = [], {name: [] for name in jobs}
    ratios = {name: [] for name in jobs}
    own_batches = {name: [] for name in jobs}
    extra = {name: [] for name in beside}
    with_extra = {name: [] for name in beside}
    for _ in range(rounds):
        own_at = {b: own_time_per_row(engine, x.shape[1:], b) for b in sizes}
        own = own_at[batch]
        per_row.append(own)
        for name, (run, rows, used) in jobs.items():
            start = time.perf_counter()
            run()
            took = time.perf_counter() - start
            seconds[name].append(took)
            ratios[name].append(took / (rows * own))
            if used:
                own_batches[name].append(took / sum(b * own_at[b] for b in used))
            if name in beside:
                start = time.perf_counter()
                beside[name]()
                alone = time.perf_counter() - start
                extra[name].append(alone)
                with_extra[name].append(took / (rows * own + alone))

    def median(values: list) -> float | None:
        return statistics.median(values) if values else None

    return batch, statistics.median(per_row), {
        name: (jobs[name][1], median(seconds[name]), median(ratios[name]),
               median(own_batches[name]), median(extra.get(name, [])),
               median(with_extra.get(name, [])))
        for name in jobs}


def report(batch: int, per_row: float, rows: dict, out=print) -> None:
    out(f"batch size (fastest measured): {batch}; ORT's own time per row there: "
        f"{per_row * 1000:.2f} ms")
    out("limit: rows x that time; own batches: ORT's own time for the batches the run makes "
        "(20 rows run as one batch of 20, slower per row than a batch of 64)")
    out(f"{'method / protocol':22s} {'rows':>6s} {'time':>8s} {'limit':>8s} "
        f"{'ratio':>6s} {'own batches':>11s}  (target <= {TARGET})")
    notes = []
    for name, (count, took, ratio, own_batches, extra, with_extra) in rows.items():
        best = ratio if own_batches is None else min(ratio, own_batches)
        own_text = "-" if own_batches is None else f"{own_batches:.2f}"
        out(f"{name:22s} {count:6d} {took:7.2f}s {count * per_row:7.2f}s {ratio:6.2f} "
            f"{own_text:>11s}{'' if best <= TARGET else '  over'}")
        if extra is not None:
            notes.append(f"{name}: its non-forward work alone (the same run with a forward that "
                         f"answers at once) takes {extra:.2f}s, {extra / (count * per_row):.2f}x "
                         f"the forward limit; against forward limit + that work the ratio is "
                         f"{with_extra:.2f}")
    for note in notes:
        out(note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18", choices=["resnet18", "resnet50"])
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--masks", type=int, default=200)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import torch
    from _models import export, randomise_batchnorm, resnet18, resnet50
    torch.manual_seed(0)
    net = {"resnet18": resnet18, "resnet50": resnet50}[args.model]()
    path = export(randomise_batchnorm(net), size=args.size)
    explainer = Explainer(path, threads=args.threads, cache=False)
    x = np.random.default_rng(0).standard_normal(
        (args.images, 3, args.size, args.size)).astype(np.float32)
    print(f"{args.model} {args.size}x{args.size}, {args.images} images, {args.threads} ORT "
          f"threads; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    report(*measure(explainer, x, args.rounds, args.masks, args.window))
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
