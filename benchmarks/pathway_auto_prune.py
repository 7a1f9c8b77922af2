"""Which default prune percentage for pathway: a fixed P or `--prune auto` (per input, the
largest P whose output change stays within 15%, the authors' rule)? Measured by faithfulness
on the real models, with the gradient as the reference in the same run.

    python benchmarks/pathway_auto_prune.py [--views 4] [--digits 100]

Inputs: EfficientNet-Lite0 (models/efficientnet_lite0.onnx) on the 13 shipped photos, each in
`--views` of real_imagenet.py's deterministic crops; the digits CNN on the first `--digits`
held-out digits. For pathway at P = 50, 85 and auto, and the gradient: the output change and
P used per input, LeRF@10% and MoRF@10% (pixel perturbation, fill 0, signed ranking),
deletion and insertion AUC. Writes benchmarks/results/pathway_auto/results.json and table.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from real_digits import load as load_digits  # noqa: E402
from real_imagenet import load_inputs  # noqa: E402

from onnxpath.evaluate import Settings, evaluate  # noqa: E402
from onnxpath.evaluate.report import mean_sem  # noqa: E402
from onnxpath.explainer import Explainer  # noqa: E402

VARIANTS = {"pathway P=50": ("pathway", {"prune_percent": 50.0}),
            "pathway P=85": ("pathway", {"prune_percent": 85.0}),
            "pathway auto": ("pathway", {"prune_percent": "auto"}),
            "gradient": ("gradient", {})}
METRICS = ["lerf", "morf", "deletion", "insertion"]
OUT = ROOT / "benchmarks/results/pathway_auto"


def measure(explainer: Explainer, x: np.ndarray) -> dict:
    rows = {}
    for name, (method, options) in VARIANTS.items():
        start = time.perf_counter()
        report = evaluate(explainer, x, [method], METRICS,
                          Settings(method_options=options, batch_size=8))
        row = {"seconds": round(time.perf_counter() - start, 1)}
        for score in report.scores:
            if score.column in ("lerf@10%", "morf@10%", "deletion", "insertion") or \
                    score.column in METRICS:
                mean, se, n = mean_sem(score.values)
                row[score.column] = {"mean": float(mean), "se": float(se), "n": int(n)}
        if method == "pathway":
            result = explainer.attribute(x, method="pathway", **options)
            change = np.asarray([e["output_change"] for e in result.extras])
            used = np.asarray([e["prune_percent"] for e in result.extras])
            row["output_change"] = {"mean": float(change.mean()),
                                    "median": float(np.median(change)),
                                    "over_50%": int((change > 0.5).sum()), "n": len(change)}
            row["prune_percent"] = {"mean": float(used.mean()), "min": float(used.min()),
                                    "max": float(used.max())}
        rows[name] = row
        print(name, json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, default=4, help="crops per Lite0 photo (≤ 16)")
    parser.add_argument("--digits", type=int, default=100, help="held-out digits")
    args = parser.parse_args()
    results = {}
    digits = Explainer(ROOT / "models/digits_cnn.onnx")
    results["digits_cnn"] = measure(digits, load_digits(digits, args.digits)[0])
    lite0 = Explainer(ROOT / "models/efficientnet_lite0.onnx")
    x, names, _ = load_inputs(lite0, ROOT / "models/photos")
    keep = [i for i, name in enumerate(names) if int(name.split("#")[1]) < args.views]
    results["efficientnet_lite0"] = measure(lite0, x[keep])
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(results, indent=1))
    lines = []
    for model, rows in results.items():
        columns = [c for c in next(iter(rows.values())) if isinstance(
            next(iter(rows.values()))[c], dict) and "se" in next(iter(rows.values()))[c]]
        lines += [f"### {model}", "", "| variant | P used (mean, range) | output change "
                  "(mean / median / >50%) | " + " | ".join(columns) + " |",
                  "|---" * (3 + len(columns)) + "|"]
        for name, row in rows.items():
            used = row.get("prune_percent")
            change = row.get("output_change")
            lines.append(
                f"| {name} | " + (f"{used['mean']:.1f} ({used['min']:.0f}–{used['max']:.0f})"
                                  if used else "–")
                + " | " + (f"{100 * change['mean']:.1f}% / {100 * change['median']:.1f}% / "
                           f"{change['over_50%']} of {change['n']}" if change else "–")
                + " | " + " | ".join(f"{row[c]['mean']:.3f} ± {row[c]['se']:.3f}"
                                     for c in columns) + " |")
        lines.append("")
    (OUT / "table.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
