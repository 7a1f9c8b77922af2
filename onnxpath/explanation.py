"""What `Explainer.attribute` returns: one method's maps for a batch, with the prediction."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from onnxpath.errors import UsageError


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


@dataclass
class Explanation:
    """One method's result for a batch: raw maps plus what the prediction was."""

    method: str
    maps: np.ndarray  # (N, *attributed tensor's shape)
    targets: np.ndarray  # (N,) class (or output element) indices
    logits: np.ndarray  # (N,) target logit
    probs: np.ndarray  # (N,) target probability; NaN where the output has none (regression)
    extras: list[dict] = field(default_factory=list)
    time_ms: float = 0.0
    class_logits: np.ndarray | None = None  # (N, classes): every class's logit
    wrt: str | None = None  # the tensor attributed, when it is not the model input itself
    kind: str = "classes"  # classes, regression, region or elements (see intake/heads.py)
    probabilities: bool = False  # the logits are probabilities (no Softmax to undo)
    tokens: list[list[str]] | None = None  # per example, for text
    feature_names: list[str] | None = None  # for tables
    # kind "elements": one example's shape of the output, whose flattened elements `targets`
    # and the columns of `class_logits` index (see `element`)
    element_shape: tuple = ()

    def element(self, row: int) -> tuple[int, ...] | None:
        """Which output element row `row` explains (kind "elements": `--target-index`, or an
        N×T×K output), as an index into `element_shape`; None for other kinds, or when the
        output's shape stayed unknown."""
        shape = tuple(self.element_shape)
        if self.kind != "elements" or not shape or not all(isinstance(d, int) for d in shape) \
                or self.class_logits is None or int(np.prod(shape)) != self.class_logits.shape[1]:
            return None
        return tuple(int(i) for i in np.unravel_index(int(self.targets[row]), shape))

    def scores(self, reduce: str = "sum") -> np.ndarray:
        """One score per token, feature or time step: the map reduced over every axis after
        the first of each example (D of a T×D text map, C of a C×T series). `sum` (signed),
        `abs-sum` or `l2`."""
        return reduce_features(self.maps, reduce)


def reduce_features(maps: np.ndarray, reduce: str = "sum") -> np.ndarray:
    """(N, K): maps (N, K, ...) reduced over their trailing axes (maps of rank 2 unchanged)."""
    flat = maps.reshape(len(maps), maps.shape[1] if maps.ndim > 1 else 1, -1).astype(np.float64)
    if reduce == "sum":
        return flat.sum(axis=2)
    if reduce == "abs-sum":
        return np.abs(flat).sum(axis=2)
    if reduce == "l2":
        return np.sqrt((flat ** 2).sum(axis=2))
    raise UsageError(f"unknown token/feature reduction '{reduce}'; choose sum, abs-sum or l2")


def at_layer(record: dict) -> bool:
    """Whether a record's map is attributed to an inner tensor (`--layer`): its `wrt` is the
    layer its extras name, so the map has the layer's shape, not the input's."""
    return record.get("wrt") is not None and record["wrt"] == record.get("extras", {}).get("layer")


def units_field(scores: np.ndarray) -> list[dict]:
    """A layer's scores (`--layer`) where they are not one per token or table feature: the
    record's `units` field, [{"unit", "score"}], `unit` the flat index into the layer."""
    return [{"unit": i, "score": float(s)} for i, s in enumerate(np.ravel(scores))]
