"""The corpus checks, shared by test_corpus.py and table.py (which prints the table
in docs/exporters.md).

Correct means: within twice float32's own error of the float64 reference (the source framework
run in float32, stored with the case), with a floor of FLOOR for ONNX Runtime's own float32
summation order, or agreeing with central differences where those are the reference. A case's
`criterion` may replace that (issue 23's deployed formats): {"kind": "relative", "tolerance":
t} a fixed bound on the relative error (float16 2e-2, float64 models 1e-10), or {"kind":
"cosine", "floor": c} cosine >= c against the straight-through float64 reference (int8).
"""

from __future__ import annotations

import json

import numpy as np

from onnxpath import Explainer

from .fixture import CORPUS, relative_error

FLOOR = 5e-6


def cases() -> list[str]:
    return sorted(p.stem for p in CORPUS.glob("*.json"))


def load(name: str) -> tuple[dict, dict[str, np.ndarray]]:
    meta = json.loads((CORPUS / f"{name}.json").read_text())
    with np.load(CORPUS / f"{name}.npz") as data:
        return meta, {k: data[k] for k in data.files}


def model_path(meta: dict):
    """The case's model: <name>.onnx, or its folder (an Optimum-style export)."""
    return CORPUS / meta.get("model", f"{meta['name']}.onnx")


def tolerance(meta: dict) -> float:
    criterion = meta.get("criterion", {})
    if criterion.get("kind") == "cosine":
        return 1.0 - criterion["floor"]
    if criterion.get("kind") == "relative":
        return criterion["tolerance"]
    return max(2.0 * (meta["float32_error"] or 0.0), FLOOR)


def measure(meta: dict) -> str:
    """What gradient_error's first number is: "1-cos" (int8) or the relative error."""
    return "1-cos" if meta.get("criterion", {}).get("kind") == "cosine" else "rel"


def cosine(actual, expected) -> float:
    a = np.ravel(actual).astype(np.float64)
    e = np.ravel(expected).astype(np.float64)
    return float(a @ e / (np.linalg.norm(a) * np.linalg.norm(e)))


def example(data: dict[str, np.ndarray]):
    """The case's input: `x`, or the feeds of a model with several inputs (feed_<name>)."""
    if "x" in data:
        return data["x"]
    return {k.removeprefix("feed_"): v for k, v in data.items() if k.startswith("feed_")}


def gradient_error(name: str) -> tuple[float, float]:
    """(onnxpath's error against the float64 reference, the tolerance): the relative error, or
    for a cosine criterion 1 - cosine, so that `error <= tolerance` passes either way."""
    meta, data = load(name)
    explainer = Explainer(model_path(meta))
    result = explainer.attribute(example(data), "gradient", target=meta["target"])
    if measure(meta) == "1-cos":
        assert np.all(np.isfinite(result.maps)) and np.any(result.maps != 0)
        return 1.0 - cosine(result.maps, data["grad64"]), tolerance(meta)
    return relative_error(result.maps, data["grad64"]), tolerance(meta)
