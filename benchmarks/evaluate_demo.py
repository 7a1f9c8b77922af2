"""The demo evaluation: the papers' protocols for five methods on the shapes model.

    python benchmarks/evaluate_demo.py [--scenes 100] [--model models/shapes_resnet.onnx]

Runs `onnxpath evaluate` on freshly generated shapes scenes (seed 0; they carry object masks,
so the localisation metrics run too) and writes into benchmarks/results/evaluate_demo/:
table.txt (the stdout table and the wall time), eval.csv, eval.json and plots/*.png. The wall
time covers everything: model loading, scene generation, maps, every metric, the files. The
command line recorded in table.txt names paths inside the repository relative to its root, so a
rerun from any folder or checkout rewrites the tracked files with the same text.
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


def shown(argument: str | Path) -> str:
    """A path inside the repository relative to its root (as the command is typed there), any
    other path absolute; other arguments as they are."""
    if not isinstance(argument, Path):
        return argument
    path = argument.resolve()
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


def run(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "shapes_resnet.onnx"))
    parser.add_argument("--scenes", type=int, default=100)
    parser.add_argument("--sanity-images", type=int, default=100)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" /
                        "evaluate_demo")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    command = ["evaluate", Path(args.model), "--scenes", str(args.scenes), "--seed", "0",
               "-m", METHODS, "--sanity-images", str(args.sanity_images),
               "--out", args.out]  # eval.csv, eval.json, plots/ and report.html
    start, cpu = time.perf_counter(), time.process_time()
    table = io.StringIO()
    with contextlib.redirect_stdout(table):
        code = main([str(a) for a in command])
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    # Other work on the machine stretches wall time; CPU time and the load say by how much.
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    text = (f"$ onnxpath {' '.join(map(shown, command))}\n\n{table.getvalue()}\n"
            f"wall time: {seconds:.1f} s, CPU time: {cpu:.1f} s on {os.cpu_count()} cores, "
            f"load average at the end: {load:.1f} (exit code {code})\n")
    (args.out / "table.txt").write_text(text)
    print(text, end="")
    sys.exit(code)


if __name__ == "__main__":
    run(sys.argv[1:])
