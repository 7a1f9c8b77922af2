"""The demo evaluation: the papers' protocols for five methods on the shapes model.

    python benchmarks/evaluate_demo.py [--scenes 100] [--model models/shapes_resnet.onnx]

Runs `onnxpath evaluate` on freshly generated shapes scenes (seed 0; they carry object masks,
so the localisation metrics run too) and writes into benchmarks/results/evaluate_demo/:
table.txt (the stdout table and the wall time), eval.csv, eval.json and plots/*.png. The wall
time covers everything: model loading, scene generation, maps, every metric, the files.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnxpath.cli import main  # noqa: E402

METHODS = "pathway,gradient,integrated-gradients,guided-backprop,gradcam"


def run(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "shapes_resnet.onnx"))
    parser.add_argument("--scenes", type=int, default=100)
    parser.add_argument("--sanity-images", type=int, default=100)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" /
                        "evaluate_demo")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    command = ["evaluate", args.model, "--scenes", str(args.scenes), "--seed", "0",
               "-m", METHODS, "--sanity-images", str(args.sanity_images),
               "--csv", str(args.out / "eval.csv"), "--json", str(args.out / "eval.json"),
               "--plots", str(args.out / "plots")]
    start, cpu = time.perf_counter(), time.process_time()
    table = io.StringIO()
    with contextlib.redirect_stdout(table):
        code = main(command)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    # Other work on the machine stretches wall time; CPU time and the load say by how much.
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    text = (f"$ onnxpath {' '.join(command)}\n\n{table.getvalue()}\n"
            f"wall time: {seconds:.1f} s, CPU time: {cpu:.1f} s on {os.cpu_count()} cores, "
            f"load average at the end: {load:.1f} (exit code {code})\n")
    (args.out / "table.txt").write_text(text)
    print(text, end="")
    sys.exit(code)


if __name__ == "__main__":
    run(sys.argv[1:])
