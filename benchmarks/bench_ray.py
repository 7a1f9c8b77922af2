"""`--engine ray` against the plain CLI: time per image on 500 inputs, and the start-up cost.

    python benchmarks/bench_ray.py [--images 500] [--method gradient] [--actors 2]

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
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="onnxpath-bench-ray-"))
    try:
        inputs = [str(p) for p in make_inputs(work / "in", args.images)]
        base = [sys.executable, "-m", "onnxpath", "attribute", str(MODEL), *inputs, "-m",
                args.method, "-q", "--preprocess", str(ROOT / "models" / "shapes_preprocess.json")]
        ray = ["--engine", "ray", "--actors", str(args.actors), "--cpus-per-actor", "1"]
        runs = {"plain": timed([*base, "-o", str(work / "plain")]),
                f"ray, {args.actors} actors": timed([*base, "-o", str(work / "ray"), *ray])}
        names = sorted(p.name for p in (work / "plain").glob("[!.]*"))
        match, differ, missing = filecmp.cmpfiles(work / "plain", work / "ray", names,
                                                  shallow=False)
        same = len(match) == len(names) == 2 * args.images and not differ and not missing
        print(f"{args.images} inputs, {args.method}, {MODEL.name}; results identical: {same}")
        print(f"{'engine':<16}{'wall/image':>12}{'steady/image':>14}{'start-up':>11}")
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
