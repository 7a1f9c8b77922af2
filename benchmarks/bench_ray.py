"""`--engine ray` against the plain CLI: time per image on 500 inputs, and the start-up cost.

    python benchmarks/bench_ray.py [--images 500] [--method gradient] [--actors 2]
    python benchmarks/bench_ray.py --table 2000   # one CSV of 2000 rows, the tests' MLP

With --table, the input is one CSV of that many random rows for the tests' skl2onnx MLP
(tests/io/data/mlp_classifier.onnx, 6 features): the driver reads it and the actors explain
its rows, 16 a call.

Runs `onnxpath attribute` on the demo model (models/shapes_resnet.onnx, 3x64x64) over copies
of models/samples, as separate processes, each into a fresh --out:
  - plain: the default local engine;
  - ray: `--engine ray --actors N --cpus-per-actor 1` on a local Ray the process starts itself.
For each it prints the wall time per image over the whole run, the steady-state time per image
(between the first and the last JSON line, so without start-up), and the time from process
start to the first JSON line: the start-up cost (for Ray: starting the local cluster, the
actors, each loading the model). It also checks that both runs wrote the same bytes.
Both engines get the same CPUs (the plain CLI's ONNX Runtime uses every core; Ray gets one per
actor), so on a small machine Ray can only add overhead: its use is more machines.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "shapes_resnet.onnx"
TABLE_MODEL = ROOT / "tests" / "io" / "data" / "mlp_classifier.onnx"


def make_table(folder: Path, rows: int) -> Path:
    import numpy as np
    folder.mkdir(parents=True)
    path = folder / "rows.csv"
    values = np.random.default_rng(0).normal(size=(rows, 6))
    path.write_text("age,income,tenure,visits,score,balance\n"
                    + "".join(",".join(f"{v:.6f}" for v in row) + "\n" for row in values))
    return path


def make_inputs(folder: Path, count: int) -> list[Path]:
    samples = sorted((ROOT / "models" / "samples").glob("*.png"))
    folder.mkdir(parents=True)
    paths = []
    for i in range(count):
        path = folder / f"{i:04d}_{samples[i % len(samples)].name}"
        shutil.copyfile(samples[i % len(samples)], path)
        paths.append(path)
    return paths


def timed(args: list[str]) -> dict:
    """Wall time, time to the first JSON line, and time between the first and last line."""
    start = time.perf_counter()
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stamps = []
    for line in process.stdout:
        if line.strip():
            stamps.append(time.perf_counter() - start)
    _, err = process.communicate()
    wall = time.perf_counter() - start
    if process.returncode != 0:
        sys.exit(f"{' '.join(args[:6])} ... failed ({process.returncode}):\n{err}")
    return {"wall": wall, "first": stamps[0], "lines": len(stamps),
            "steady": (stamps[-1] - stamps[0]) / max(1, len(stamps) - 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--method", default="gradient")
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--table", type=int, default=0, help="rows of one CSV instead of images")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="onnxpath-bench-ray-"))
    try:
        if args.table:
            args.images = args.table
            model, extra = TABLE_MODEL, [str(make_table(work / "in", args.table))]
        else:
            model = MODEL
            extra = ["--preprocess", str(ROOT / "models" / "shapes_preprocess.json"),
                     *map(str, make_inputs(work / "in", args.images))]
        base = [sys.executable, "-m", "onnxpath", "attribute", str(model), *extra, "-m",
                args.method, "-q"]
        ray = ["--engine", "ray", "--actors", str(args.actors), "--cpus-per-actor", "1"]
        runs = {"plain": timed([*base, "-o", str(work / "plain")]),
                f"ray, {args.actors} actors": timed([*base, "-o", str(work / "ray"), *ray])}
        names = sorted(p.name for p in (work / "plain").glob("[!.]*"))
        match, differ, missing = filecmp.cmpfiles(work / "plain", work / "ray", names,
                                                  shallow=False)
        files = 3 if args.table else 2  # .npy and .png, and a table's .csv of scores
        same = len(match) == len(names) == files * args.images and not differ and not missing
        print(f"{args.images} {'rows' if args.table else 'inputs'}, {args.method}, "
              f"{model.name}; results identical: {same}")
        unit = "row" if args.table else "image"
        print(f"{'engine':<16}{'wall/' + unit:>12}{'steady/' + unit:>14}{'start-up':>11}")
        for name, run in runs.items():
            assert run["lines"] == args.images, run
            print(f"{name:<16}{run['wall'] / args.images * 1000:>9.2f} ms"
                  f"{run['steady'] * 1000:>11.2f} ms{run['first']:>9.2f} s")
        plain, distributed = runs.values()
        print(f"ray/plain: wall {distributed['wall'] / plain['wall']:.2f}x, steady "
              f"{distributed['steady'] / plain['steady']:.2f}x, start-up +"
              f"{distributed['first'] - plain['first']:.1f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
