"""One corpus case on disk: `corpus/<name>.onnx`, `<name>.npz` (input, target, references) and
`<name>.json` (where it came from, what it covers, how its reference was computed).

Imported by the build scripts in each exporter's own environment (TensorFlow, Paddle, ...), so
it needs numpy alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CORPUS = Path(__file__).resolve().parent / "corpus"


def relative_error(actual, expected) -> float:
    """max |a - b| / max |b|: the corpus's one error measure."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = float(np.max(np.abs(expected)))
    diff = float(np.max(np.abs(actual - expected)))
    return diff / scale if scale > 0 else diff


def save_case(name: str, model_bytes: bytes, x: np.ndarray | dict[str, np.ndarray], *,
              source: str, covers: list[str],
              target: int | None, grad64: np.ndarray | None, grad32: np.ndarray | None,
              logits64: np.ndarray | None, reference: str, kind: str = "gradient",
              output: str | None = None, wrt: str | None = None, notes: str = "",
              check: dict | None = None, criterion: dict | None = None,
              folder: dict[str, str] | None = None) -> dict:
    """Write one case. `grad64` is d logits[0, target] / d x (or d wrt) from the source
    framework in float64; `grad32` the same in float32, whose error against grad64 is the
    float32 error the test allows twice over. kind "forward-only": trees and the like, where
    the test checks that forward-only methods run and gradient methods refuse cleanly.
    `criterion` replaces that default where the format sets its own (checks.py: a fixed
    relative error for float16 and float64, a cosine floor for int8); `folder`: the case is a
    model folder <name>/ (model.onnx and these other files), as Hugging Face Optimum writes."""
    CORPUS.mkdir(exist_ok=True)
    if folder is None:
        (CORPUS / f"{name}.onnx").write_bytes(model_bytes)
    else:
        (CORPUS / name).mkdir(exist_ok=True)
        (CORPUS / name / "model.onnx").write_bytes(model_bytes)
        for file, text in folder.items():
            (CORPUS / name / file).write_text(text + "\n")
    # grad32 is summarised by its error in the JSON only: the fixture folder stays small.
    # A model with several inputs (a BERT's ids, mask and types) stores one example as
    # feed_<input name> arrays: checks.example() gives them back as the feeds.
    arrays = ({f"feed_{k}": v for k, v in x.items()} if isinstance(x, dict) else {"x": x})
    for key, value in (("grad64", grad64), ("logits64", logits64)):
        if value is not None:
            arrays[key] = np.asarray(value, np.float64)
    np.savez_compressed(CORPUS / f"{name}.npz", **arrays)
    meta = {"name": name, "source": source, "covers": covers, "kind": kind, "target": target,
            "output": output, "wrt": wrt, "reference": reference, "notes": notes,
            "float32_error": (relative_error(grad32, grad64)
                              if grad32 is not None and grad64 is not None else None),
            "checks": check or {}}
    if criterion is not None:
        meta["criterion"] = criterion
    if folder is not None:
        meta["model"] = f"{name}/"
    (CORPUS / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{name:36s} {source:22s} float32 error {meta['float32_error']}")
    return meta


def central_differences(f, x: np.ndarray, step: float = 1e-6, batch: int = 256) -> np.ndarray:
    """d f / d x by central differences in float64, element by element. `f` maps a float64
    batch (B, *x.shape[1:]) to B scalars (x has batch 1)."""
    x = np.asarray(x, np.float64)
    flat = x.reshape(-1)
    grad = np.zeros(flat.size)
    for start in range(0, flat.size, batch):
        idx = np.arange(start, min(start + batch, flat.size))
        plus = np.repeat(flat[None], len(idx), 0)
        minus = plus.copy()
        plus[np.arange(len(idx)), idx] += step
        minus[np.arange(len(idx)), idx] -= step
        shape = (len(idx), *x.shape[1:])
        grad[idx] = (f(plus.reshape(shape)) - f(minus.reshape(shape))) / (2 * step)
    return grad.reshape(x.shape)


def directional_check(f, x: np.ndarray, grad: np.ndarray, directions: int = 4,
                      step: float = 1e-5, seed: int = 0) -> float:
    """Largest relative mismatch between grad . v and central differences along random unit
    directions v, in float64: a cheap independent check of any reference gradient."""
    rng = np.random.default_rng(seed)
    x = np.asarray(x, np.float64)
    worst = 0.0
    for _ in range(directions):
        v = rng.standard_normal(x.shape)
        v /= np.linalg.norm(v)
        fd = (f(x + step * v) - f(x - step * v))[0] / (2 * step)
        exact = float(np.sum(grad * v))
        worst = max(worst, abs(fd - exact) / max(abs(exact), 1e-3 * np.linalg.norm(grad)))
    return worst
