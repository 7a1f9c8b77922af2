"""The weights are held once: a gradient run's peak memory stays near a plain forward pass's,
and the session cache keeps each model's weights at most once.

A ReLU network with ~120 MB of weights (a small Conv, then wide Linear layers), exported from
torch. Each run is a fresh process whose peak RSS (`os.wait4`'s ru_maxrss) is compared with
ONNX Runtime's own forward pass over the same file. Before the weights were shared, a gradient
run held 4-8 copies of them (the loaded protobuf, rewritten copies, the bytes handed to ORT,
ORT's own); the bound below allows the forward's memory plus 2.5 copies.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
FORWARD = """
import sys, numpy as np, onnxruntime as ort
s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
s.run(None, {s.get_inputs()[0].name: np.load(sys.argv[2])})
"""
# The child's own high-water mark, read as it exits (`python -c PEAK -m module ...` or
# `python -c PEAK script.py ...`). ru_maxrss would not do: a child forked from this process
# (torch loaded) starts from its parent's RSS.
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


class Wide(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc1 = nn.Linear(8 * 32 * 32, 3072)
        self.fc2 = nn.Linear(3072, 3072)
        self.fc3 = nn.Linear(3072, 10)

    def forward(self, x):
        x = torch.relu(self.conv(x)).flatten(1)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wide")
    torch.manual_seed(0)
    model = Wide().eval()
    path = folder / "wide.onnx"
    torch.onnx.export(model, torch.randn(1, 3, 32, 32), str(path), dynamo=False,
                      opset_version=17, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    x = folder / "x.npy"
    np.save(x, np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32))
    weights = sum(p.numel() * 4 for p in model.parameters())
    return path, x, weights


def peak(argv: list[str], env: dict, tmp_path: Path) -> float:
    """Peak RSS in bytes of one child process (which must succeed): `argv` is a script and
    its arguments, or "-m", a module and its arguments."""
    report = tmp_path / "peak.txt"
    done = subprocess.run([sys.executable, "-c", PEAK, *argv], capture_output=True,
                          env={**os.environ, **env, "PEAK_FILE": str(report)}, cwd=ROOT)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return int(report.read_text()) * 1024.0


def attribute(path: Path, x: Path, methods: str, out: Path, *flags: str) -> list[str]:
    return ["-m", "onnxpath", "attribute", str(path), str(x), "-m", methods, "-o", str(out),
            "-q", *flags]


def test_gradient_peak_memory_is_near_a_forward_pass(wide, tmp_path):
    path, x, weights = wide
    env = {"ONNXPATH_CACHE_DIR": str(tmp_path / "cache")}
    script = tmp_path / "forward.py"
    script.write_text(FORWARD)
    forward = peak([str(script), str(path), str(x)], env, tmp_path)
    gradient = peak(attribute(path, x, "gradient", tmp_path / "out", "--no-cache"), env,
                    tmp_path)
    bound = forward + 2.5 * weights
    print(f"weights {weights / 2**20:.0f} MB; peak RSS: forward {forward / 2**20:.0f} MB, "
          f"gradient {gradient / 2**20:.0f} MB ({gradient / forward:.2f}x), "
          f"bound {bound / 2**20:.0f} MB")
    assert gradient <= bound


def test_the_cache_holds_the_weights_once(wide, tmp_path):
    path, x, weights = wide
    cache = tmp_path / "cache"
    env = {"ONNXPATH_CACHE_DIR": str(cache)}
    for run in range(2):  # cold, then warm
        peak(attribute(path, x, "gradient,integrated-gradients,guided-backprop",
                       tmp_path / f"out{run}", "--steps", "4"), env, tmp_path)
        files = [p for p in cache.rglob("*") if p.is_file()]
        held = [p for p in files if p.suffix == ".weights"]
        rest = sum(p.stat().st_size for p in files if p.suffix != ".weights")
        print(f"run {run}: {len(files)} files, weights files "
              f"{[p.stat().st_size // 2**20 for p in held]} MB, the rest {rest / 2**20:.2f} MB")
        assert len(held) == 1 and held[0].stat().st_size >= 0.95 * weights  # biases stay
        assert rest < 0.05 * weights  # graphs only: no entry embeds the weights again


def test_a_run_without_the_cache_neither_reads_nor_leaves_a_weights_file(wide, tmp_path):
    """--no-cache writes the weights file it memory-maps under its own name, never reuses
    the cache's (whose modification time a reuse would touch), and removes it at exit."""
    path, x, _ = wide
    cache = tmp_path / "cache"
    env = {"ONNXPATH_CACHE_DIR": str(cache)}
    peak(attribute(path, x, "gradient", tmp_path / "out0", "--no-cache"), env, tmp_path)
    left = [p for p in cache.rglob("*") if p.is_file()]
    assert left == []
    peak(attribute(path, x, "gradient", tmp_path / "out1"), env, tmp_path)  # cached
    (held,) = (cache / "weights").glob("*.weights")
    stamp = held.stat().st_mtime_ns
    peak(attribute(path, x, "gradient,pathway", tmp_path / "out2", "--no-cache"), env,
         tmp_path)
    assert list((cache / "weights").glob("*.weights")) == [held]
    assert held.stat().st_mtime_ns == stamp
    maps = [np.load(tmp_path / f"out{run}" / "x.gradient.npy") for run in range(3)]
    assert np.array_equal(maps[0], maps[1]) and np.array_equal(maps[0], maps[2])


def test_a_private_weights_file_is_removed_by_its_writer_only(tmp_path):
    """A forked child runs its parent's exit handlers: it must not delete the weights file
    the parent is still reading."""
    import os

    from onnxpath.ort.weights import _remove
    path = tmp_path / "weights" / "x.weights"
    path.parent.mkdir()
    path.write_bytes(b"w")
    _remove(path, os.getpid() + 1)  # another process's handler
    assert path.exists()
    _remove(path, os.getpid())
    assert not path.exists() and not path.parent.exists()


def test_an_explainer_with_its_own_cache_folder_keeps_the_weights_there(wide, tmp_path,
                                                                        monkeypatch):
    import shutil

    from onnxpath import Explainer
    path, _, _ = wide
    copy = tmp_path / "model" / "wide.onnx"  # a file this process has not read yet
    copy.parent.mkdir()
    shutil.copy(path, copy)
    monkeypatch.setenv("ONNXPATH_CACHE_DIR", str(tmp_path / "default"))
    Explainer(copy, cache=tmp_path / "own")
    assert len(list((tmp_path / "own" / "weights").glob("*.weights"))) == 1
    assert not (tmp_path / "default").exists()


def test_an_export_past_the_protobuf_limit_writes_external_data(wide, tmp_path, monkeypatch):
    """`onnxpath export` of a model whose weights are held in the shared file: inline when the
    graph fits one protobuf, else (the limit lowered here) beside it as external data; both
    run in ONNX Runtime and agree."""
    import onnxruntime as ort

    import onnxpath.tools.export as export
    from onnxpath import Explainer

    path, x, _ = wide
    monkeypatch.setenv("ONNXPATH_CACHE_DIR", str(tmp_path / "cache"))
    explainer = Explainer(path, cache=False)
    model = export.gradient_export(explainer)
    inline = export.save_model(model, tmp_path / "inline" / "g.onnx", None)
    monkeypatch.setattr(export, "PROTOBUF_LIMIT", 1 << 20)
    split = export.save_model(model, tmp_path / "split" / "g.onnx", None)
    assert len(inline) == 1 and len(split) == 2 and split[0].stat().st_size < 1 << 20
    feeds = {"input": np.load(x)}
    grads = [ort.InferenceSession(str(files[0])).run(["grad"], feeds)[0]
             for files in (inline, split)]
    print(f"exported grad max {np.abs(grads[0]).max():.3g}, "
          f"difference {np.abs(grads[0] - grads[1]).max():.3g}")
    assert np.abs(grads[0]).max() > 0
    np.testing.assert_array_equal(grads[0], grads[1])


def test_page_aligned_external_data_is_read_in_place(wide, tmp_path, monkeypatch):
    """A model saved with one external file per tensor (torch's layout past 2 GB) is memory-
    mapped where it lies: no weights file is written, and the maps equal the inline model's."""
    import onnx

    from onnxpath import Explainer

    path, x, _ = wide
    cache = tmp_path / "cache"
    monkeypatch.setenv("ONNXPATH_CACHE_DIR", str(cache))
    split = tmp_path / "split" / "wide.onnx"
    split.parent.mkdir()
    onnx.save(onnx.load(str(path)), str(split), save_as_external_data=True,
              all_tensors_to_one_file=False, size_threshold=1024)
    example = np.load(x)
    inline = Explainer(path, cache=False).attribute(example, method="gradient", target=[3])
    before = set((cache / "weights").glob("*")) if (cache / "weights").exists() else set()
    mapped = Explainer(split, cache=cache).attribute(example, method="gradient", target=[3])
    after = set((cache / "weights").glob("*"))
    print(f"weights files written for the external model: {len(after - before)}; "
          f"largest difference {np.abs(inline.maps - mapped.maps).max():.3g}")
    assert after == before
    np.testing.assert_array_equal(inline.maps, mapped.maps)


def test_lean_sessions_give_the_same_maps(wide, tmp_path, monkeypatch):
    """Sessions over big shared weights skip pre-packing and constant folding (sessions.py,
    LEAN_MIN_BYTES; lowered here to this model): the maps stay those of the default
    sessions."""
    import onnxpath.ort.sessions as sessions
    from onnxpath import Explainer

    path, x, _ = wide
    monkeypatch.setenv("ONNXPATH_CACHE_DIR", str(tmp_path / "cache"))
    example = np.load(x)
    default = Explainer(path, cache=False).attribute(example, method="gradient", target=[3])
    monkeypatch.setattr(sessions, "LEAN_MIN_BYTES", 0)
    lean = Explainer(path, cache=False).attribute(example, method="gradient", target=[3])
    error = np.abs(default.maps - lean.maps).max() / np.abs(default.maps).max()
    print(f"lean vs default sessions: relative error {error:.2g}")
    assert error < 1e-5


def test_weights_files_are_trimmed_least_recently_used_first(wide, tmp_path, monkeypatch):
    """Each new model file leaves a weights file; past ONNXPATH_CACHE_MAX_MB the oldest go,
    never the one in use."""
    import shutil

    path, _, weights = wide
    cache = tmp_path / "cache"
    monkeypatch.setenv("ONNXPATH_CACHE_DIR", str(cache))
    monkeypatch.setenv("ONNXPATH_CACHE_MAX_MB", str(1.5 * weights / 2**20))
    for i in range(3):  # three copies of the model, one process each: room for one file
        copy = tmp_path / f"copy{i}" / "wide.onnx"
        copy.parent.mkdir()
        shutil.copy(path, copy)
        subprocess.run([sys.executable, "-c", "import sys; from onnxpath.intake.model import "
                        "load_model; load_model(sys.argv[1])", str(copy)], check=True, cwd=ROOT)
    left = list((cache / "weights").glob("*.weights"))
    print(f"weights files left: {len(left)}")
    assert len(left) == 1
