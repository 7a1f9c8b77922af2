"""LIME and KernelSHAP: onnxpath against the `lime` and `shap` packages at equal sample counts.

Two models: the demo model (models/shapes_resnet.onnx, 3×64×64, where the forward runs
dominate every side's time) and a one-conv network on 3×32×32 (where what is measured is each
side's own work). Each side runs ONNX Runtime, over the same 8×8 grid of segments, zero
baseline, target probability; `lime` and `shap` call a classifier function that runs ONNX
Runtime on their batches. What differs is the sampling, the building of perturbed copies and
the regression. Rounds are interleaved, so both sides see the same background load; the best
time is kept.

    python benchmarks/bench_lime_shap.py [--samples 1000] [--repeats 3]

`lime` and `shap` are test extras (pip install -e ".[test]").
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnxpath.explainer import Explainer  # noqa: E402
from onnxpath.methods._common import softmax  # noqa: E402
from onnxpath.methods._features import grid  # noqa: E402


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def small_model(folder: Path, size: int = 32) -> Path:
    """Conv 3→6, ReLU, global average pool, linear to 5 classes: a cheap forward pass."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((6, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((6, 5)).astype(np.float32), "fc")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("MatMul", ["f", "fc"], ["logits"])]
    graph = helper.make_graph(
        nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                       ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])],
        initializer=inits)
    path = folder / "small.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64, help="rows per ONNX Runtime run")
    args = parser.parse_args()
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        for label, model, size in (("demo", ROOT / "models" / "shapes_resnet.onnx", 64),
                                   ("small", small_model(Path(folder)), 32)):
            compare(label, model, size, args)


def compare(label: str, model: Path, size: int, args) -> None:
    import onnxruntime as ort
    import shap
    from lime import lime_image

    explainer = Explainer(model, cache=False)
    x = np.random.default_rng(0).random((1, 3, size, size)).astype(np.float32)
    target = int(explainer.predict(x).argmax())
    ids = grid(x.shape[1:], 8)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def classify(images_hwc: np.ndarray) -> np.ndarray:
        batch = np.transpose(images_hwc, (0, 3, 1, 2)).astype(np.float32)
        parts = [session.run(None, {name: batch[i:i + args.batch]})[0]
                 for i in range(0, len(batch), args.batch)]
        return softmax(np.concatenate(parts).astype(np.float64))

    def on_masks(z: np.ndarray) -> np.ndarray:
        rows = np.where(z[:, ids[0]][:, None] > 0.5, x, 0)
        return classify(np.transpose(rows, (0, 2, 3, 1)))[:, target]

    image = np.transpose(x[0], (1, 2, 0)).astype(np.float64)
    lime_ref = lime_image.LimeImageExplainer(kernel_width=0.25, feature_selection="none",
                                             random_state=0)
    cases = {
        "lime": (lambda: explainer.attribute(x, "lime", target, samples=args.samples,
                                             segments="grid:8", internal_batch_size=args.batch),
                 lambda: lime_ref.explain_instance(
                     image, classify, labels=(target,), top_labels=None, hide_color=0,
                     num_features=64, num_samples=args.samples, batch_size=args.batch,
                     segmentation_fn=lambda _: ids[0], random_seed=0)),
        "kernel-shap": (lambda: explainer.attribute(x, "kernel-shap", target,
                                                    samples=args.samples, segments="grid:8",
                                                    internal_batch_size=args.batch),
                        lambda: shap.KernelExplainer(on_masks, np.zeros((1, 64))).shap_values(
                            np.ones((1, 64)), nsamples=args.samples, l1_reg=False,
                            silent=True)),
    }
    import contextlib
    import io
    for method, (ours, theirs) in cases.items():
        ours()  # warm-up: sessions built
        best_ours = best_theirs = float("inf")
        for _ in range(args.repeats):
            best_ours = min(best_ours, timed(ours))
            with contextlib.redirect_stderr(io.StringIO()):  # lime's tqdm bar
                best_theirs = min(best_theirs, timed(theirs))
        print(f"{label:6s} {method:12s} samples={args.samples}  onnxpath "
              f"{best_ours * 1000:8.1f} ms   {'lime' if method == 'lime' else 'shap':4s} "
              f"{best_theirs * 1000:8.1f} ms   "
              f"ratio {best_theirs / best_ours:5.2f}x")


if __name__ == "__main__":
    main()
