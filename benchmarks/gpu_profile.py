"""Where the time goes on CUDA: per-op time and provider of each onnxpath session.

    python benchmarks/gpu_profile.py [--model resnet50] [--device cuda] [--threads 4]

Times `Explainer.attribute` per method (median of 5 after 2 warm-ups), then reruns each method
once with ONNX Runtime's profiler on and prints, per session, the ops by total time with the
provider that ran them, and how many nodes fell back to the CPU.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import onnxpath.ort.sessions as runtime  # noqa: E402
from onnxpath.explainer import Explainer  # noqa: E402

PROFILE = {"on": False, "dir": tempfile.mkdtemp(prefix="ortprof-")}
_options = runtime.session_options


def profiled_options(*args, **kwargs):
    options = _options(*args, **kwargs)
    if PROFILE["on"]:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(PROFILE["dir"], "p")
    return options


runtime.session_options = profiled_options


def summarise(path: str) -> None:
    with open(path) as file:
        events = json.load(file)
    by_op = collections.defaultdict(float)
    providers = collections.Counter()
    runs = 0
    for event in events:
        if event.get("cat") == "Session" and event.get("name") == "model_run":
            runs += 1
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        args = event.get("args", {})
        key = (args.get("op_name"), args.get("provider"))
        by_op[key] += event["dur"] / 1000.0
        providers[args.get("provider")] += 1
    total = sum(by_op.values())
    print(f"  {Path(path).name}: {runs} runs, {total / max(runs, 1):.2f} ms kernel time per run, "
          f"kernels per provider {dict(providers)}")
    for (op, provider), ms in sorted(by_op.items(), key=lambda kv: -kv[1])[:12]:
        print(f"    {op:24s} {provider:26s} {ms / max(runs, 1):8.2f} ms/run")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    import _models
    import torch
    torch.manual_seed(0)
    path = _models.export(getattr(_models, args.model)())
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    methods = ["gradient", "pathway", "integrated-gradients", "gradcam"]
    for method in methods:
        for target in (None, 1):
            explainer = Explainer(str(path), device=args.device, threads=args.threads, cache=False)
            for _ in range(2):
                explainer.attribute(x, method, target=target)
            times = []
            for _ in range(5):
                start = time.perf_counter()
                explainer.attribute(x, method, target=target)
                times.append((time.perf_counter() - start) * 1000)
            print(f"{method:22s} target={target}: median {statistics.median(times):8.2f} ms "
                  f"({', '.join(f'{t:.1f}' for t in times)})", flush=True)
    for method in ("gradient", "pathway"):
        PROFILE["on"] = True
        explainer = Explainer(str(path), device=args.device, threads=args.threads, cache=False)
        for _ in range(4):
            explainer.attribute(x, method, target=1)
        del explainer
        PROFILE["on"] = False
        import gc
        gc.collect()
        print(f"profile of {method} (4 calls):", flush=True)
    for file in sorted(glob.glob(os.path.join(PROFILE["dir"], "*.json"))):
        try:
            summarise(file)
        except Exception as err:  # a profile still being written by a live session
            print(f"  {file}: unreadable ({err})")


if __name__ == "__main__":
    main()
