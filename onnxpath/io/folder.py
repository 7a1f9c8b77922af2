"""What a Hugging Face Optimum export folder says besides its graph, taken with no flags:
the class names (`config.json`'s `id2label`), the tokenizer (`tokenizer.json`) and the image
preprocessing (`preprocessor_config.json`, read by `preprocess.from_json`). A flag the user
gives still wins over the folder's file."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from onnxpath.errors import UsageError
from onnxpath.io.labels import parse_json_labels

CONFIG = "config.json"
TOKENIZER = "tokenizer.json"
PREPROCESSOR = "preprocessor_config.json"


def folder_labels(folder: Path) -> list[str] | None:
    """`id2label` of the folder's config.json ({"0": "NEGATIVE", ...}), or None. Transformers
    writes a default LABEL_0, LABEL_1... when the model was trained without names: still the
    names the model's own library prints, so they are kept."""
    path = folder / CONFIG
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UsageError(f"cannot read {path}: {err}") from err
    labels = config.get("id2label") if isinstance(config, dict) else None
    return parse_json_labels(labels) if isinstance(labels, dict) and labels else None


def fill_from_folder(o: SimpleNamespace) -> None:
    """Set the flags the user left out (`labels`, `tokenizer`, `preprocess`) from the model
    folder's files, in place; nothing when the model is a file."""
    folder = Path(o.model)
    if not folder.is_dir():
        return
    if getattr(o, "labels", None) is None and (folder / CONFIG).is_file():
        o.folder_labels = folder_labels(folder)
    if hasattr(o, "tokenizer") and o.tokenizer is None and (folder / TOKENIZER).is_file():
        o.tokenizer = folder / TOKENIZER
    if hasattr(o, "preprocess") and o.preprocess is None and (folder / PREPROCESSOR).is_file():
        o.preprocess = folder / PREPROCESSOR
