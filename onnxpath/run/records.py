"""What the run loop hands on: the JSON record of one map (its fields are the README's JSON
line), its printing, and the stacking of examples into one ONNX Runtime batch."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

import numpy as np

from onnxpath.explanation import Explanation
from onnxpath.methods import METHODS, effective_params
from onnxpath.run.job import TOP, top_classes


def emit_json(record: dict, stream=None) -> None:
    """One JSON line on stdout (or `stream`), flushed so `| jq` sees it while the run goes."""
    stream = stream or sys.stdout
    stream.write(json.dumps(record) + "\n")
    stream.flush()


def blank_record(name: str, method: str, options: dict, error: str | None = None) -> dict:
    """A record before (or instead of) a result: every field, most of them empty."""
    return {"input": name, "method": method, "target": None, "label": None,
            "logit": None, "prob": None, "wrt": None, "top": [], "outputs": {},
            "params": effective_params(METHODS[method], options),
            "time_ms": None, "error": error, "extras": {}}


def describe(record: dict, explanation: Explanation, row: int,
             label: Callable[[int], str | None]) -> str | None:
    """Fill the record's prediction fields from one row of an explanation; the error message
    when the map or the model's output is not finite (then nothing may be written)."""
    raw = explanation.maps[row]
    scores = explanation.class_logits[row]
    c = int(explanation.targets[row])
    record.update(target=c, label=label(c), extras=explanation.extras[row],
                  time_ms=round(explanation.time_ms / len(explanation.maps), 2))
    if not (np.isfinite(raw).all() and np.isfinite(scores).all()):
        where = "the model's output" if not np.isfinite(scores).all() else "the attribution"
        return f"{where} holds NaN or Inf for {record['input']}; nothing written"
    prob = float(explanation.probs[row])
    record.update(logit=float(explanation.logits[row]), wrt=explanation.wrt,
                  prob=None if np.isnan(prob) else prob,
                  top=[{"class": k, "label": label(k), "logit": logit,
                        "prob": prob if explanation.kind == "classes" else None}
                       for k, logit, prob in top_classes(scores, TOP,
                                                         explanation.probabilities)])
    return None


def shape_key(x) -> tuple:
    """Inputs that stack together: same shape, or the same shapes by input name (.npz)."""
    return tuple(sorted((k, v.shape) for k, v in x.items())) if isinstance(x, dict) else x.shape


def stack(examples: list):
    if isinstance(examples[0], dict):
        return {k: np.stack([e[k] for e in examples]) for k in examples[0]}
    return np.stack(examples)


def rows_of(x) -> int:
    return len(next(iter(x.values()))) if isinstance(x, dict) else len(x)


def take(x, rows: slice):
    return {k: v[rows] for k, v in x.items()} if isinstance(x, dict) else x[rows]


def repeat_rows(x, k: int):
    if isinstance(x, dict):
        return {name: np.repeat(v, k, axis=0) for name, v in x.items()}
    return np.repeat(x, k, axis=0)
