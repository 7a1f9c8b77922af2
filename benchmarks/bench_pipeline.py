"""Shell-pipeline speed: a 64-image batch process against warm in-process calls, and a CLI
invocation's start-to-first-result time with the on-disk session cache warm and cold.

    python benchmarks/bench_pipeline.py [--images 64] [--method gradient] [--model resnet50]

Prints:
  - per-image time of one `onnxpath attribute` process over all images (wall time / images,
    with the disk cache warm, and the steady state between the first and the last JSON line),
    against one warm in-process `Explainer.attribute` call on one preprocessed image
    (target: <= 1.15x);
  - start-to-first-result of a CLI process (Popen to the first JSON line on stdout) with an
    empty cache folder (cold) and with the folder a previous process filled (warm)
    (target: warm <= 0.5x cold).

The model (torch-defined ResNet, random weights) is exported in a child process so that torch's
OpenMP threads never share this process with ONNX Runtime.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def export_model(name: str, folder: Path) -> Path:
    path = folder / f"{name}.onnx"
    code = ("import sys, warnings; warnings.filterwarnings('ignore'); "
            f"sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import torch; "
            "from _models import export, randomise_batchnorm, resnet18, resnet50; "
            "torch.manual_seed(0); "
            "from pathlib import Path; "
            f"export(randomise_batchnorm({name}()), path=Path({str(path)!r}))")
    subprocess.run([sys.executable, "-c", code], check=True)
    return path


def make_images(folder: Path, count: int) -> list[Path]:
    """Photo-sized JPEGs (a few sizes and aspect ratios) with smooth content, so decoding and
    resizing cost what real photos cost."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        h, w = [(375, 500), (480, 640), (500, 333), (427, 640)][i % 4]
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        phase = rng.random(3) * 6
        image = np.stack([np.sin(6 * xx + phase[c]) * np.cos(4 * yy - phase[c])
                          for c in range(3)], axis=-1)
        image = ((image + 1) * 127.5 + rng.normal(0, 8, image.shape)).clip(0, 255)
        path = folder / f"img{i:03d}.jpg"
        Image.fromarray(image.astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def cli(model: Path, inputs: list[str], cache: Path, extra: list[str]) -> tuple[float, float,
                                                                                  list[float]]:
    """(seconds to the first JSON line, seconds to exit, arrival time of each line)."""
    env = {**os.environ, "ONNXPATH_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "onnxpath", "attribute", str(model),
                                *inputs, "-q", *extra], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    arrivals = []
    for line in process.stdout:
        arrivals.append(time.perf_counter() - start)
        record = json.loads(line)
        if record["error"]:
            raise SystemExit(f"onnxpath failed on {record['input']}: {record['error']}")
    process.wait()
    total = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"onnxpath exited {process.returncode}: {process.stderr.read()}")
    return arrivals[0], total, arrivals


def warm_call(model: Path, image: Path, method: str, cache: Path, repeats: int) -> float:
    """Median seconds of Explainer.attribute on one preprocessed image, sessions warm."""
    from onnxpath import Explainer
    from onnxpath.io.image import load_input
    from onnxpath.io.preprocess import preset_for

    explainer = Explainer(model, cache=cache)
    x, _ = load_input(image, explainer.input_shape, preset_for(explainer.input_shape,
                                                               explainer.proto))
    explainer.attribute(x, method=method)
    explainer.attribute(x, method=method)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        explainer.attribute(x, method=method)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--method", default="gradient")
    parser.add_argument("--model", default="resnet50", choices=["resnet50", "resnet18"])
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="cold/warm start pairs")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (~1 GB)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="onnxpath-bench-pipeline-"))
    try:
        run(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> None:
    model = export_model(args.model, work)
    images = make_images(work / "images", args.images)
    # --no-resume: every run below must compute, not re-emit the previous run's results
    extra = ["-m", args.method, "-o", str(work / "out"), "-b", str(args.batch_size), "--no-resume"]
    print(f"{args.model} ({model.stat().st_size / 1e6:.0f} MB), {args.images} JPEGs, method "
          f"{args.method}, batch size {args.batch_size}, {os.cpu_count()} CPUs")

    # Start-to-first-result: a fresh cache folder per cold run, then a warm run on it.
    colds, warms = [], []
    for i in range(args.repeats):
        cache = work / f"cache{i}"
        colds.append(cli(model, [str(images[0])], cache, extra)[0])
        warms.append(cli(model, [str(images[0])], cache, extra)[0])
    cold, warm = statistics.median(colds), statistics.median(warms)
    print(f"start to first result, cold cache: {cold:.3f} s (runs: "
          f"{', '.join(f'{t:.3f}' for t in colds)})")
    print(f"start to first result, warm cache: {warm:.3f} s (runs: "
          f"{', '.join(f'{t:.3f}' for t in warms)})")
    print(f"  warm / cold = {warm / cold:.2f}  (target <= 0.5)")

    single = warm_call(model, images[0], args.method, work / "cache0", repeats=10)
    print(f"warm in-process call, one image: {single * 1000:.1f} ms")
    for label, cache in (("warm cache", work / "cache0"), ("cold cache", work / "cache-batch")):
        first, total, arrivals = cli(model, [str(work / "images")], cache, extra)
        per_image = total / args.images
        steady = (arrivals[-1] - arrivals[0]) / max(1, len(arrivals) - 1)
        print(f"batch process, {label}: {total:.2f} s for {args.images} images = "
              f"{per_image * 1000:.1f} ms/image ({per_image / single:.2f}x the warm call); "
              f"steady state {steady * 1000:.1f} ms/image ({steady / single:.2f}x); "
              f"first result after {first:.2f} s")
    print("  target: batch per-image <= 1.15x the warm call")
    if args.keep:
        print(f"(work folder: {work})")


if __name__ == "__main__":
    main()
