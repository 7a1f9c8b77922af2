"""What `onnxpath attribute` computes for every input and how its records describe results:
the job, the rendering style, `--target` parsing and the top-k list, shared by the run loop
and the Ray engine, for every modality."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from onnxpath.errors import UsageError
from onnxpath.io.preprocess import Preprocess

TOP = 5  # predictions listed in each record


@dataclass
class Style:
    """How a raw map becomes a picture (see render.py)."""

    reduce: str = "max-abs"
    colormap: str = "jet"
    normalise: str = "percentile"
    percentile: float | None = None
    alpha: float = 0.5

    def overlay_args(self) -> dict:
        return {"alpha": self.alpha, "colormap": self.colormap, "how": self.normalise,
                "percentile": self.percentile}


@dataclass
class Job:
    """What to compute for every input, and where to put it. The first fields serve every
    modality; then those of images, then those of tables, series and text."""

    methods: Sequence[str] = ("gradient",)
    target: int | None = None  # a class index; None: the prediction (or the top_k classes)
    top_k: int | None = None  # attribute each of the K best classes
    options: dict = field(default_factory=dict)  # method options (steps, prune_percent, ...)
    labels: list[str] | None = None
    fallback: str | None = None
    out: Path | None = None
    npz: Path | None = None  # every map also in one .npz
    resume: bool = True  # with `out`: skip inputs a previous run of this job finished
    batch_size: int = 1
    # images
    prep: Preprocess = field(default_factory=Preprocess)
    side_by_side: bool = False
    style: Style = field(default_factory=Style)
    # tables, series, text
    tokenizer: object = None
    text: str | None = None  # --text: one more input, after the files
    feature_names: list[str] | None = None
    sample_rate: int | None = None
    token_reduce: str = "sum"

    def result_fields(self, images: bool) -> dict:
        """The fields that can change a result of this run (see resume.job_fingerprint):
        neither where it is written and how fast, nor another modality's settings."""
        skip = WHERE + (MODAL_ONLY if images else IMAGE_ONLY)
        return {entry.name: getattr(self, entry.name) for entry in fields(self)
                if entry.name not in skip}


WHERE = ("out", "npz", "batch_size", "resume")
IMAGE_ONLY = ("prep", "side_by_side", "style")
MODAL_ONLY = ("tokenizer", "text", "feature_names", "sample_rate", "token_reduce")


def parse_target(text: str | int | None, labels: list[str] | None) -> tuple[int | None,
                                                                           int | None]:
    """`--target`: (class index or None, K of topK or None). Accepts an index, a label (case
    insensitive) or topK."""
    if text is None or text == "":
        return None, None
    if isinstance(text, int):
        return text, None
    lowered = text.strip().lower()
    if lowered.startswith("top") and lowered[3:].isdigit():
        k = int(lowered[3:])
        if k < 1:
            raise UsageError(f"--target {text}: K must be at least 1")
        return None, k
    if lowered.lstrip("-").isdigit():
        return int(lowered), None
    if labels:
        names = [label.lower() for label in labels]
        if lowered in names:
            return names.index(lowered), None
    raise UsageError(f"--target '{text}' is neither a class index, a known label nor topK"
                     + ("" if labels else " (no labels given: use --labels FILE)"))


def top_classes(scores: np.ndarray, k: int,
                probabilities: bool = False) -> list[tuple[int, float, float]]:
    """The k best classes as (class, logit, softmax probability, or the score itself when
    the scores are probabilities)."""
    shifted = scores.astype(np.float64) - scores.max()
    probs = scores.astype(np.float64) if probabilities else \
        np.exp(shifted) / np.exp(shifted).sum()
    order = np.argsort(-scores, kind="stable")[:k]
    return [(int(c), float(scores[c]), float(probs[c])) for c in order]
