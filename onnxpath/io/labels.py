"""Class labels from a text file (one per line), a JSON list or dict, or the model's metadata."""

from __future__ import annotations

import json
from pathlib import Path

import onnx

from onnxpath.errors import UsageError


def read_labels(path: str | Path) -> list[str]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise UsageError(f"cannot read labels file {path}: {err.strerror}") from err
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise UsageError(f"labels file {path} is not valid JSON: {err}") from err
        return parse_json_labels(data)
    return [line.strip() for line in text.splitlines() if line.strip()]


def parse_json_labels(data) -> list[str]:
    if isinstance(data, list):
        return [str(x) for x in data]
    if isinstance(data, dict):
        # Keras style: {"0": ["n01440764", "tench"], ...}; or plain {"0": "tench"}.
        def name(value):
            return str(value[-1]) if isinstance(value, list) else str(value)
        return [name(data[k]) for k in sorted(data, key=lambda k: int(k))]
    raise UsageError("a JSON labels file must hold a list or an index->label dict")


def model_labels(model: onnx.ModelProto) -> list[str] | None:
    hint = {p.key: p.value for p in model.metadata_props}.get("onnxpath.labels")
    return parse_json_labels(json.loads(hint)) if hint else None


def resolve_target(target: str | None, labels: list[str] | None) -> int | None:
    """`--target`: an index or a label name; None means the predicted class."""
    if target is None or target == "":
        return None
    if target.lstrip("-").isdigit():
        return int(target)
    if labels:
        lowered = [label.lower() for label in labels]
        if target.lower() in lowered:
            return lowered.index(target.lower())
    raise UsageError(f"--target '{target}' is neither a class index nor a known label"
                     + ("" if labels else " (no labels given: use --labels FILE)"))
