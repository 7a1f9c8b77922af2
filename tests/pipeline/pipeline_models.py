"""Small models for the pipeline tests, built with onnx.helper."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from onnxpath.cli import main


def classifier(path: Path, channels: int = 3, size: int = 16, classes: int = 4,
               layout: str = "nchw", metadata: dict | None = None) -> Path:
    """Conv -> Relu -> GlobalAveragePool -> MatMul -> Softmax over a channels x size x size
    input (NHWC models transpose first, as TF exports do)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, channels, 3, 3)).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.standard_normal((4, classes)).astype(np.float32), "fc")
    nodes, first = [], "x"
    if layout == "nhwc":
        nodes.append(helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 3, 1, 2],
                                      name="to_nchw"))
        first = "xt"
    nodes += [helper.make_node("Conv", [first, "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
              helper.make_node("Relu", ["c"], ["r"], name="relu"),
              helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
              helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
              helper.make_node("MatMul", ["f", "fc"], ["logits"], name="fc"),
              helper.make_node("Softmax", ["logits"], ["probs"], axis=1, name="softmax")]
    shape = ["N", channels, size, size] if layout == "nchw" else ["N", size, size, channels]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", classes])],
        initializer=[w, fc])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def identity_probe(path: Path, size: int = 4) -> Path:
    """A model whose 'logits' are its input flattened: what preprocessing produced, exactly."""
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["logits"], name="flatten")], "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3 * size * size])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def save_png(path, seed=0, size=(20, 24), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4}.get(mode)
    shape = (size[0], size[1], channels) if channels else size
    Image.fromarray((rng.random(shape) * 255).astype(np.uint8), mode).save(path)
    return path


def run_cli(capsys, *args):
    """(exit code, parsed JSON lines, stderr) of an in-process `onnxpath attribute`."""
    code = main(["attribute", *map(str, args)])
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines() if line.strip()]
    return code, lines, captured.err


def default_sigint() -> None:
    """`preexec_fn` for a child the test will interrupt: SIGINT back to its default action.
    A test run started in the background (`cmd &` in a script, nohup) passes SIGINT on as
    ignored, and Python then never raises KeyboardInterrupt in the child."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def read_rest(process, timeout: float) -> tuple[str, str]:
    """(stdout, stderr) of a text-mode child after the test has read some stdout lines with
    readline, to the child's exit. Through the same file objects: readline may have read
    ahead into its buffer, which communicate() (reading the descriptors) would never see,
    losing lines or splitting one. A timer kills a child that hangs, so the reads end."""
    import threading
    watchdog = threading.Timer(timeout, process.kill)
    watchdog.start()
    try:
        out, err = process.stdout.read(), process.stderr.read()
        process.wait()
    finally:
        watchdog.cancel()
    return out, err
