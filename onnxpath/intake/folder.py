"""A model given as a folder: a Hugging Face Optimum export (`model.onnx` beside `config.json`,
`tokenizer.json`, `preprocessor_config.json`) is a folder, not a file, and users pass it as such.
The folder's other files are read by `onnxpath.io.folder`; here only the `.onnx` file is found."""

from __future__ import annotations

from pathlib import Path

from onnxpath.errors import ModelError

# Optimum's names, most specific first: a classifier's export is model.onnx; decoders and
# encoder-decoders write several graphs, of which onnxpath explains the encoder's output.
PREFERRED = ("model.onnx", "model_quantized.onnx", "model_optimized.onnx", "encoder_model.onnx")


def model_file(path: str | Path) -> Path:
    """The `.onnx` file a model path names: the path itself, or the one model in a folder."""
    path = Path(path)
    if not path.is_dir():
        return path
    for name in PREFERRED:
        if (path / name).is_file():
            return path / name
    found = sorted(path.glob("*.onnx"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise ModelError(f"model path is a folder with no .onnx file: {path}")
    raise ModelError(f"the folder {path} holds {len(found)} .onnx files and no model.onnx; "
                     f"name one: {', '.join(p.name for p in found[:5])}")
