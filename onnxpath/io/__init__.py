"""Input and output adapters for models that are not image classifiers.

One small interface per modality:

- **read**: a file (or a string) becomes `Example`s: the model-input tensors plus what is needed
  to show the result (tokens, feature names, the raw values, a sample rate);
- **render**: an example's map becomes a JSON field (`tokens`, `features`), a picture (a line
  plot for a series) or a report fragment (coloured tokens, a CSV of scores).

`tensors.py` reads `.npy` and `.npz` tensors for any model, `table.py` reads CSV rows and
names features, `series.py` reads `.npy`, CSV columns and `.wav` and plots, `text.py`
tokenises raw text and colours tokens. The methods never see any of this: they get the tensor
that `Explainer` attributes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Example:
    """One model input and its display metadata."""

    name: str  # the `input` of the JSON line: a path, path:line or "--text"
    stem: str  # output file stem
    inputs: np.ndarray | dict  # one example (no batch axis), or named arrays (batch of 1)
    kind: str  # table, series or text
    tokens: list[str] | None = None
    feature_names: list[str] | None = None
    values: np.ndarray | None = None  # what the user sees: the row, the signal
    sample_rate: int | None = None
    extra: dict = field(default_factory=dict)

