"""The corpus checks, shared by test_corpus.py and table.py (which prints the table
in docs/exporters.md).

Correct means: within twice float32's own error of the float64 reference (the source framework
run in float32, stored with the case), with a floor of FLOOR for ONNX Runtime's own float32
summation order, or agreeing with central differences where those are the reference.
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


def tolerance(meta: dict) -> float:
    return max(2.0 * (meta["float32_error"] or 0.0), FLOOR)


def gradient_error(name: str) -> tuple[float, float]:
    """(onnxpath's relative error against the float64 reference, the tolerance)."""
    meta, data = load(name)
    explainer = Explainer(CORPUS / f"{name}.onnx")
    result = explainer.attribute(data["x"], "gradient", target=meta["target"])
    return relative_error(result.maps, data["grad64"]), tolerance(meta)
