"""Memory and wall time of `onnxpath attribute` on big models, against a plain ONNX Runtime
forward pass, each in a fresh process.

    python benchmarks/bench_scale.py --models vit-b16,vit-l16,vit-h14,vgg16 [--folder DIR]
    python benchmarks/bench_scale.py --models vit-tiny,vgg-tiny      # minutes, for development

Every network is defined here in plain torch with random weights (torchvision is not a
dependency) and exported at benchmark time (torch.onnx.export, opset 17; a model past 2 GB gets
external data, as torch writes it). Per model and method: the child's wall time and peak RSS
(`os.wait4`'s ru_maxrss, i.e. the process's high-water mark, weights included) for

- the plain forward: `onnxruntime.InferenceSession(path).run` on one 224×224 input;
- `onnxpath attribute -m METHOD --no-cache` (cold, nothing cached),
- `onnxpath attribute -m METHOD` with an empty cache folder (cold, writing it), then again
  (warm, reading it).

Prints a markdown table (paste it into docs/scale.md) and the cache folder's size per model.
Run the big models one at a time on a machine with ≥ 3× their size free.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _models import vgg16  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class Block(nn.Module):
    """One pre-norm encoder layer: multi-head self-attention, then a GELU MLP, each residual.
    Written out with nn.Linear (torch's fused encoder kernels do not export)."""

    def __init__(self, width: int, heads: int, mlp: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp), nn.GELU(), nn.Linear(mlp, width))

    def forward(self, x):
        n, t, c = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(n, t, 3, self.heads, c // self.heads) \
            .permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-2, -1) / (c // self.heads) ** 0.5, dim=-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(n, t, c))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """ViT (Dosovitskiy et al. 2021) with torchvision's dims: a stride-`patch` Conv embeds the
    patches, a class token and learned positions are added, `depth` pre-norm encoder layers
    with a GELU MLP of `mlp` units follow, and a Linear head reads the class token."""

    def __init__(self, patch: int, depth: int, width: int, heads: int, mlp: int,
                 size: int = 224, classes: int = 1000):
        super().__init__()
        self.embed = nn.Conv2d(3, width, patch, patch)
        tokens = (size // patch) ** 2 + 1
        self.cls = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, tokens, width) * 0.02)
        self.blocks = nn.Sequential(*(Block(width, heads, mlp) for _ in range(depth)))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        return self.head(self.norm(self.blocks(x))[:, 0])


class WideCNN(nn.Module):
    """A VGG-shaped ReLU CNN made wide enough to pass 2 GB (2.38 GB: its classifier holds the
    bulk), so that torch writes its weights as external data."""

    def __init__(self, hidden: int = 14336):
        super().__init__()
        widths = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]
        layers, channels = [], 3
        for w in widths:
            if w == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, w, 3, padding=1), nn.ReLU()]
                channels = w
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, hidden), nn.ReLU(),
                                        nn.Linear(hidden, hidden), nn.ReLU(),
                                        nn.Linear(hidden, 1000))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


MODELS = {  # name: (constructor, methods benchmarked)
    "vit-b16": (lambda: ViT(16, 12, 768, 12, 3072), ("gradient", "integrated-gradients")),
    "vit-l16": (lambda: ViT(16, 24, 1024, 16, 4096), ("gradient", "integrated-gradients")),
    "vit-h14": (lambda: ViT(14, 32, 1280, 16, 5120), ("gradient", "integrated-gradients")),
    "vgg16": (vgg16, ("gradient", "pathway")),
    "wide-cnn": (WideCNN, ("gradient", "pathway")),
    # small stand-ins for developing the benchmark and the CI test
    "vit-tiny": (lambda: ViT(16, 4, 384, 6, 1536), ("gradient", "integrated-gradients")),
    "vgg-tiny": (lambda: WideCNN(1024), ("gradient", "pathway")),
    "vit-dev": (lambda: ViT(16, 4, 768, 12, 3072), ("gradient", "integrated-gradients")),
}

FORWARD = """
import sys, numpy as np, onnxruntime as ort
s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
x = np.load(sys.argv[2])
s.run(None, {s.get_inputs()[0].name: x})
"""


def export(name: str, folder: Path) -> Path:
    """Random weights (seed 0), exported once per folder; >2 GB models get external data."""
    path = folder / f"{name}.onnx"
    if path.exists():
        return path
    torch.manual_seed(0)
    model = MODELS[name][0]().eval()
    with torch.no_grad():
        torch.onnx.export(model, torch.randn(1, 3, 224, 224), str(path), dynamo=False,
                          opset_version=17, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    # Past 2 GB torch writes one external file per tensor, each at offset 0: onnxpath maps
    # them where they lie (ort/weights.py).
    del model
    return path


# Run a script or a module (`-m`), then write the process's own high-water RSS (VmHWM) to
# $PEAK_FILE. ru_maxrss would not do: a child forked from this process (torch loaded) starts
# from its parent's RSS.
PEAK = """
import atexit, os, runpy, sys
def report():
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    with open(os.environ["PEAK_FILE"], "w") as f:
        f.write(status["VmHWM"].split()[0])
atexit.register(report)
if sys.argv[1] == "-m":
    sys.argv = sys.argv[2:]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
else:
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
"""


def measure(argv: list[str], env: dict | None = None) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in GB, exit code) of one child process running `argv` (a script
    and its arguments, or "-m", a module and its arguments)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "peak"
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", PEAK, *argv], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, cwd=ROOT,
                              env={**os.environ, **(env or {}), "PEAK_FILE": str(report)})
        wall = time.perf_counter() - start
        peak = int(report.read_text()) / 2**20 if report.exists() else float("nan")
    if done.returncode != 0:
        last = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
        print(f"  ! {' '.join(argv[:4])} exited {done.returncode}: {last}", flush=True)
    return wall, peak, done.returncode


def attribute(model: Path, x: Path, method: str, out: Path, cache: Path | None,
              steps: int) -> list[str]:
    shutil.rmtree(out, ignore_errors=True)  # a finished output is resumed, not recomputed
    argv = ["-m", "onnxpath", "attribute", str(model), str(x), "-m", method, "-o", str(out),
            "-q"]
    if method == "integrated-gradients":
        argv += ["--steps", str(steps)]
    return argv + (["--no-cache"] if cache is None else [])


def weights_bytes(model: Path) -> int:
    """The model file and its external data files (everything else in its folder)."""
    return sum(p.stat().st_size for p in model.parent.iterdir()
               if p.is_file() and p.suffix not in (".npy", ".py"))


def bench(name: str, folder: Path, steps: int, rounds: int) -> list[str]:
    """Per method, `rounds` interleaved rounds of: the plain forward, no cache, cache cold,
    cache warm. A wall-time ratio is the median over rounds of each round's own ratio to that
    round's forward, so both sides of it ran under the same load."""
    model = export(name, folder)
    x = folder / "x.npy"
    np.save(x, np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32))
    out = folder / "out"
    size = weights_bytes(model) / 2**30
    script = folder / "forward.py"
    script.write_text(FORWARD)
    print(f"{name}: {size:.2f} GB", flush=True)
    rows = []
    for method in MODELS[name][1]:
        runs: dict[str, list] = {"forward": [], "no cache": [], "cold": [], "warm": []}
        cached = 0.0
        for _ in range(rounds):
            runs["forward"].append(measure([str(script), str(model), str(x)]))
            scratch = folder / "no-cache"  # where --no-cache writes (and removes) its weights file
            shutil.rmtree(scratch, ignore_errors=True)
            runs["no cache"].append(measure(attribute(model, x, method, out, None, steps),
                                            {"ONNXPATH_CACHE_DIR": str(scratch)}))
            shutil.rmtree(scratch, ignore_errors=True)
            cache = folder / f"cache-{name}-{method}"
            shutil.rmtree(cache, ignore_errors=True)
            for mode in ("cold", "warm"):
                runs[mode].append(measure(attribute(model, x, method, out, cache, steps),
                                          {"ONNXPATH_CACHE_DIR": str(cache)}))
            cached = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) / 2**30
            shutil.rmtree(cache, ignore_errors=True)
        fwd_wall = statistics.median(w for w, _, _ in runs["forward"])
        fwd_rss = statistics.median(r for _, r, _ in runs["forward"])
        cells = [cell(runs[mode], runs["forward"]) for mode in ("no cache", "cold", "warm")]
        print(f"  {method}: forward {fwd_wall:.1f} s {fwd_rss:.2f} GB | {' | '.join(cells)} | "
              f"cache {cached:.2f} GB", flush=True)
        rows.append(f"| {name} ({size:.2f} GB) | `{method}` | {fwd_wall:.1f} s, {fwd_rss:.2f} GB"
                    f" | {' | '.join(cells)} | {cached:.2f} GB |")
    return rows


def cell(runs: list, forwards: list) -> str:
    """'wall (× the forward's), peak RSS (× the forward's)', medians over the rounds."""
    if any(code != 0 for _, _, code in runs):
        return f"fails ({max(r for _, r, _ in runs):.2f} GB)"
    wall = statistics.median(w for w, _, _ in runs)
    rss = statistics.median(r for _, r, _ in runs)
    times = statistics.median(w / f for (w, _, _), (f, _, _) in zip(runs, forwards, strict=True))
    memory = statistics.median(r / f for (_, r, _), (_, f, _) in zip(runs, forwards,
                                                                     strict=True))
    return f"{wall:.1f} s ({times:.1f}×), {rss:.2f} GB ({memory:.1f}×)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="vit-tiny,vgg-tiny")
    parser.add_argument("--folder", default=None, help="where models are exported (kept)")
    parser.add_argument("--steps", type=int, default=4, help="integrated-gradients steps")
    parser.add_argument("--rounds", type=int, default=1,
                        help="interleaved rounds (forward, no cache, cold, warm) per method")
    args = parser.parse_args()
    rows = ["| model (weights) | method | ORT forward: wall, peak RSS | no cache | cache cold |"
            " cache warm | cache size |", "|---|---|---|---|---|---|---|"]
    for name in args.models.split(","):
        folder = Path(args.folder or tempfile.mkdtemp(prefix="onnxpath-scale-")) / name
        folder.mkdir(parents=True, exist_ok=True)
        rows += bench(name, folder, args.steps, args.rounds)
        if args.folder is None:
            shutil.rmtree(folder.parent, ignore_errors=True)
    load = os.getloadavg()
    print(f"\nload average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
          f"{os.cpu_count()} CPUs\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
