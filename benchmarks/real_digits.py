"""The papers' experiments on the second real model: the ReLU CNN trained on scikit-learn's
handwritten digits (models/digits_cnn.onnx; models/train_digits.py).

    python benchmarks/real_digits.py          # a few minutes on 2 busy cores

Inputs: the first 300 of the 597 held-out digits (models/digits_heldout.npz), each its own
handwritten sample (no crops or flips), through the model's metadata preprocessing (bilinear
8×8 → 32×32). Fill 0 is the training mean in normalised space, as for ImageNet.

1. Sweep P in {0,30,50,70,80,85,90,95,99}: output change and LeRF@10% (signed and abs ranking);
   the P whose mean output change is closest to 15% is used below.
2. Every metric of `onnxpath evaluate` but sensitivity-n, for the six methods, at that P
   (integrated gradients with its default 50 points; the sanity cascade over every layer).
3. LeRF@1..10% for pathway and gradient under each pixel ranking (signed, abs, max).

Writes benchmarks/results/real/digits/{sweep,table,ranks}.json, table.txt and plots.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from onnxpath.evaluate import Settings, evaluate  # noqa: E402
from onnxpath.evaluate.plot import Line, line_plot, write_plots  # noqa: E402
from onnxpath.evaluate.report import mean_sem  # noqa: E402
from onnxpath.explainer import Explainer  # noqa: E402
from onnxpath.io.image import to_tensor  # noqa: E402
from onnxpath.io.outputs import save_png  # noqa: E402
from onnxpath.io.preprocess import preset_for  # noqa: E402

METHODS = ["pathway", "gradient", "input-x-gradient", "integrated-gradients",
           "guided-backprop", "gradcam"]
SWEEP = (0, 30, 50, 70, 80, 85, 90, 95, 99)
METRICS = ["lerf", "morf", "deletion", "insertion", "road", "sanity"]


def load(explainer: Explainer, count: int) -> tuple[np.ndarray, np.ndarray]:
    data = np.load(ROOT / "models/digits_heldout.npz")
    prep = preset_for(explainer.input_shape, explainer.proto)
    x = np.stack([to_tensor(Image.fromarray(im, "L"), prep, (32, 32), 1)[0]
                  for im in data["images"][:count]])
    return x, data["labels"][:count]


def stats(values) -> dict:
    mean, se, n = mean_sem(np.asarray(values, dtype=np.float64))
    return {"mean": mean, "se": se, "n": n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models/digits_cnn.onnx")
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/real/digits")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    explainer = Explainer(args.model, threads=2)
    x, labels = load(explainer, args.count)
    accuracy = float((explainer.predict(x).argmax(1) == labels).mean())
    print(f"{len(x)} held-out digits, accuracy {accuracy:.4f}", flush=True)

    rows = []
    for p in SWEEP:
        opts = {"prune_percent": p}
        result = explainer.attribute(x, "pathway", **opts)
        change = [e["output_change"] for e in result.extras]
        row = {"P": p, "output_change": stats(change),
               "output_change_median": float(np.median(change))}
        for rank in ("signed", "abs"):
            rep = evaluate(explainer, x, ["pathway"], ["lerf"],
                           Settings(rank=rank, fractions=(0.1,), method_options=opts))
            row[f"lerf10_{rank}"] = stats(rep.scores[0].values)
        rows.append(row)
        print(f"P={p}: change {row['output_change']['mean']:.3f}, LeRF@10% signed "
              f"{row['lerf10_signed']['mean']:.3f} abs {row['lerf10_abs']['mean']:.3f}",
              flush=True)
    chosen = min(rows, key=lambda r: abs(r["output_change"]["mean"] - 0.15))["P"]
    (args.out / "sweep.json").write_text(json.dumps(
        {"inputs": len(x), "accuracy": accuracy, "rows": rows, "chosen_P": chosen},
        indent=1, default=float) + "\n")
    save_png(args.out / "sweep.png", line_plot(
        [Line("output change", SWEEP, [r["output_change"]["mean"] for r in rows]),
         *[Line(f"LeRF@10% {rank}", SWEEP, [r[f"lerf10_{rank}"]["mean"] for r in rows])
           for rank in ("signed", "abs")]],
        "digits CNN: pathway output change and LeRF@10% vs P", "P (% of neurons pruned)",
        "|p' - p| / p"))

    opts = {"prune_percent": chosen}
    report = evaluate(explainer, x, METHODS, METRICS,
                      Settings(method_options=opts, step=32, sanity_images=100),
                      progress=lambda m: print(m, flush=True))
    (args.out / "table.txt").write_text(report.table() + "\n")
    (args.out / "table.json").write_text(json.dumps(
        {"P": chosen, "scores": {f"{s.column}/{s.method}": stats(s.values)
                                 for s in report.scores},
         "settings": report.settings, "notes": report.notes}, indent=1, default=float) + "\n")
    write_plots(report, args.out / "plots")
    print(report.table(), flush=True)

    ranks = {}
    for rank in ("signed", "abs", "max"):
        rep = evaluate(explainer, x, ["pathway", "gradient"], ["lerf"],
                       Settings(rank=rank, method_options=opts))
        for s in rep.scores:
            ranks[f"{s.method}/{rank}"] = stats(s.values)
            print(f"{s.method} {rank}: LeRF@10% {ranks[f'{s.method}/{rank}']['mean']:.3f}")
    (args.out / "ranks.json").write_text(json.dumps(
        {"P": chosen, "lerf10": ranks, "seconds": round(time.perf_counter() - start, 1)},
        indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
