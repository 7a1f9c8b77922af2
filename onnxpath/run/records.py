"""What the run loop hands on: its units (one place each in the run's output order), the JSON
record of one map (its fields are the README's JSON line), its printing, and the stacking of
examples into one ONNX Runtime batch."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onnxpath.errors import UsageError
from onnxpath.explanation import Explanation
from onnxpath.io import Adapter, Example
from onnxpath.methods import METHODS, effective_params
from onnxpath.run.job import TOP, top_classes
from onnxpath.run.resume import Source

# One method's outcome for one example: a map per class explained (an Explanation and its
# row), or an error message.
Outcome = list["tuple[Explanation, int] | str"]


@dataclass
class Unit:
    """One place in the run's output order."""

    name: str  # the records' `input`
    stem: str
    adapter: Adapter | None  # None: its records are known
    path: Path | None = None  # a file still to read into one example
    example: Example | None = None
    records: list[dict] | None = None  # known already: resumed, or the input is unreadable
    from_files: bool = False  # known records whose maps lie under --out (--npz reads them)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    problem: str | None = None  # reading it failed
    position: int = 0
    source: Source | None = None  # with resume: the input file as it was before it was read


def in_chunks(units: Iterable[Unit], batch_size: int) -> Iterator[list[Unit]]:
    """Units in runs holding `batch_size` examples to explain (known ones ride along)."""
    chunk, todo = [], 0
    for unit in units:
        chunk.append(unit)
        todo += unit.records is None
        if todo >= batch_size:
            yield chunk
            chunk, todo = [], 0
    if chunk:
        yield chunk


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
    when the map or the model's output is not finite (then nothing may be written).

    Where one element of a multi-dim output is explained (`--target-index`, an N×T×K output),
    `target` and `top` name classes, not flat indices, and `target_index` says which element
    (see `element_classes`)."""
    raw = explanation.maps[row]
    scores = explanation.class_logits[row]
    c = int(explanation.targets[row])
    ranked = scores  # what `top` ranks: one element's classes, or every column
    element = explanation.element(row)
    if element is not None:
        c, ranked = element_classes(element, scores, explanation.element_shape)
        record["target_index"] = list(element)
    record.update(target=c, label=label(c), extras=explanation.extras[row],
                  time_ms=round(explanation.time_ms / len(explanation.maps), 2))
    # NaN or Inf elsewhere in the output is noted in extras (explainer.flag_non_finite), not
    # fatal: the map is the gradient of a finite element.
    if not (np.isfinite(raw).all() and np.isfinite(explanation.logits[row])):
        where = "the explained output element" if not np.isfinite(explanation.logits[row]) \
            else "the attribution"
        return f"{where} holds NaN or Inf for {record['input']}; nothing written"
    prob = float(explanation.probs[row])
    record.update(logit=float(explanation.logits[row]), wrt=explanation.wrt,
                  prob=None if not np.isfinite(prob) else prob,
                  top=finite_top(ranked, explanation, label))
    return None


def finite_top(ranked: np.ndarray, explanation: Explanation, label) -> list[dict]:
    """The TOP best classes; NaN and Inf scores (noted in extras) are left out of the
    ranking, so the JSON line holds numbers only."""
    ranked = np.asarray(ranked)
    finite = np.isfinite(ranked)
    if finite.all():
        chosen = top_classes(ranked, TOP, explanation.probabilities)
    else:
        kept = np.flatnonzero(finite)
        chosen = [(int(kept[k]), logit, prob) for k, logit, prob in
                  top_classes(ranked[kept], TOP, explanation.probabilities)] if kept.size else []
    return [{"class": k, "label": label(k), "logit": logit,
             "prob": prob if explanation.kind == "classes" else None} for k, logit, prob in chosen]


def element_classes(element: tuple[int, ...], scores: np.ndarray,
                    shape: tuple[int, ...]) -> tuple[int, np.ndarray]:
    """(the class of an explained output element, every class's score at its position).
    The class axis of one example's output is the first of a K×H×W (…) map (segmentation)
    and the last of a T×K one (a sequence of scores); a K-vector is its own class axis."""
    axis = 0 if len(shape) >= 3 else len(shape) - 1
    position: list = list(element)
    position[axis] = slice(None)
    return element[axis], np.asarray(scores).reshape(shape)[tuple(position)]


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


def best_classes(logits: np.ndarray, k: int) -> np.ndarray:
    """The K best classes of each row of N×K `logits`, best first (ties: the lower index).
    `--target topK` past the class count stops the run (exit 2): never K quietly cut, also
    where the count could not be known before the first input ran (a dynamic input shape)."""
    classes = logits.shape[1]
    if k > classes:
        raise UsageError(f"--target top{k} asks for {k} classes; the model has {classes}")
    return np.argsort(-logits, axis=1, kind="stable")[:, :k]
