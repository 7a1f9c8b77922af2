"""Inputs and outputs: one adapter per modality, and the files every run writes.

The run loop (`onnxpath.run.loop`) is the same for every modality. An `Adapter` supplies what
differs:

- **read**: a file (or `--text`) becomes `Example`s: the model-input tensors plus what is needed
  to show the result (the image, tokens, feature names, the raw values, a sample rate);
- **splits**: whether one file holds several examples (CSV rows, lines of text). Those files
  are read when the run is planned (on the Ray driver); the others when their example is
  explained (in the loop's reader thread, or on a Ray worker);
- **stackable**: whether examples of one shape share ONNX Runtime calls (images), or go one
  at a time, one call per class (tables, series, text);
- **write**: one map becomes the modality's JSON field and files (an overlay, a CSV of scores,
  a line plot, coloured tokens); `finish` sees an example's records once every method is done.

Adapters: `image.py`, `table.py`, `series.py`, `text.py`; `modality.py` picks one per input.
Adding a modality means one adapter file and its line in `modality.ADAPTERS`. Also here:
`tensors` (.npy/.npz for any model), `preprocess` (the image recipe), `labels`, `render`
(colour maps, overlays), `outputs` (atomic files, the .npz bundle), `storage` (URLs) and
`inputs` (arguments into files and output stems). The methods never see any of this: they get
the tensor that `Explainer` attributes. `io` imports `Explainer`'s layer and below (`intake` for
a model's inputs), never `run` or `cli`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Example:
    """One model input and its display metadata."""

    name: str  # the `input` of the JSON line: a path, path:line or "--text"
    stem: str  # output file stem
    inputs: np.ndarray | dict  # one example (no batch axis), or named arrays (batch of 1)
    kind: str  # image, table, series or text
    tokens: list[str] | None = None
    feature_names: list[str] | None = None
    values: np.ndarray | None = None  # what the user sees: the image, the row, the signal
    sample_rate: int | None = None
    extra: dict = field(default_factory=dict)


class Adapter:
    """What one modality does differently (see the module docstring). `job` is the run's
    `onnxpath.run.job.Job`; adapters read the fields of their modality."""

    kind = ""
    splits = False
    stackable = False

    def __init__(self, explainer, job):
        self.explainer, self.job = explainer, job

    def read(self, path: Path | None, stem: str) -> list[Example]:
        raise NotImplementedError

    def options(self, example: Example) -> dict:
        """Method options that come with the example (the tokens of a text)."""
        return {}

    def write(self, example: Example, raw: np.ndarray, base: str, title: str, record: dict,
              files) -> None:
        """Fill the record's modality field and write its pictures through `files`
        (`onnxpath.io.outputs.ResultFiles`); the raw map is already written."""

    def finish(self, example: Example, records: list[dict], files) -> None:
        """After every method of one example (a side-by-side figure)."""
