"""Tiny models and files for the resume-fingerprint tests: one of each modality, built with
onnx.helper, and the files attribute's options name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from pipeline_models import save_png

F = TensorProto.FLOAT


def save(graph_nodes, inputs, outputs, inits: dict, path: Path) -> Path:
    graph = helper.make_graph(graph_nodes, path.stem, inputs, outputs,
                              initializer=[numpy_helper.from_array(np.asarray(v), k)
                                           for k, v in inits.items()])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def image_model(path: Path, seed: int = 0, size: int | None = None) -> Path:
    """x (N×3×H×W, any H×W or size×size) → ×2 (`xs`, for --wrt) → Conv (`c`) → Relu (`r`) →
    pooled logits → Softmax `probs`; also `aux` (other logits, for --output) and `seg`
    (N×3×H×W, a segmentation output for --target-index and --region)."""
    h, w = (size, size) if size else ("H", "W")
    rng = np.random.default_rng(seed)
    inits = {"two": np.float32(2.0),
             "w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
             "fc": rng.standard_normal((4, 4)).astype(np.float32),
             "fc2": rng.standard_normal((4, 4)).astype(np.float32),
             "w2": rng.standard_normal((3, 4, 1, 1)).astype(np.float32)}
    nodes = [helper.make_node("Mul", ["x", "two"], ["xs"], name="scale"),
             helper.make_node("Conv", ["xs", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
             helper.make_node("MatMul", ["f", "fc"], ["logits"], name="fc"),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=1, name="softmax"),
             helper.make_node("MatMul", ["f", "fc2"], ["aux"], name="fc2"),
             helper.make_node("Conv", ["r", "w2"], ["seg"], name="head")]
    return save(nodes, [helper.make_tensor_value_info("x", F, ["N", 3, h, w])],
                [helper.make_tensor_value_info("probs", F, ["N", 4]),
                 helper.make_tensor_value_info("aux", F, ["N", 4]),
                 helper.make_tensor_value_info("seg", F, ["N", 3, h, w])], inits, path)


def series_model(path: Path, length: int = 64) -> Path:
    """x (N×1×T) → Conv1d → Relu → pooled → 3 logits."""
    rng = np.random.default_rng(0)
    inits = {"w": rng.standard_normal((2, 1, 3)).astype(np.float32),
             "fc": rng.standard_normal((2, 3)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("MatMul", ["f", "fc"], ["logits"])]
    return save(nodes, [helper.make_tensor_value_info("x", F, ["N", 1, length])],
                [helper.make_tensor_value_info("logits", F, ["N", 3])], inits, path)


WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "good", "bad", "film", "very", "plot"]


def tokenizer(path: Path, shift: int = 0) -> Path:
    """A word-level tokenizer.json over WORDS; `shift` > 0 maps the words to other ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    vocab = {w: (i + shift) % 20 if i >= 4 else i for i, w in enumerate(WORDS)}
    made = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    made.pre_tokenizer = pre_tokenizers.Whitespace()
    path.parent.mkdir(parents=True, exist_ok=True)
    made.save(str(path))
    return path


def assets(folder: Path) -> dict[str, Path]:
    """Every model, input and option file the tests name, by a short name."""
    from tests.intake.intake_models import token_classifier

    folder.mkdir(parents=True, exist_ok=True)
    made = {"image": image_model(folder / "image.onnx"),
            "image2": image_model(folder / "image2.onnx", seed=1),
            "segmenter": image_model(folder / "segmenter.onnx", size=12),
            "series": series_model(folder / "series.onnx"),
            "table": Path(__file__).parent.parent / "io" / "data" / "mlp_classifier.onnx",
            "photo": save_png(folder / "in" / "photo.png", seed=0)}
    onnx.save(token_classifier(), folder / "text.onnx")
    made["text"] = folder / "text.onnx"
    np.save(folder / "in" / "rows.npy", np.random.default_rng(0).standard_normal((2, 6))
            .astype(np.float32))
    made["rows"] = folder / "in" / "rows.npy"
    np.save(folder / "in" / "signal.npy", np.sin(np.arange(64, dtype=np.float32) / 4)[None])
    made["signal"] = folder / "in" / "signal.npy"
    for k in (1, 2):
        made[f"labels{k}"] = folder / f"labels{k}.txt"
        made[f"labels{k}"].write_text("\n".join(f"class{i}-{k}" for i in range(4)) + "\n")
        made[f"pp{k}"] = folder / f"preprocessor{k}.json"
        made[f"pp{k}"].write_text(json.dumps({"image_mean": [0.1 * k] * 3,
                                              "image_std": [0.5] * 3}))
        made[f"baseline{k}"] = folder / f"baseline{k}.npy"
        np.save(made[f"baseline{k}"], np.full((3, 12, 12), 0.1 * k, np.float32))
        made[f"region{k}"] = folder / f"region{k}.npy"
        region = np.zeros((12, 12), np.uint8)
        region[k:k + 4, 2:8] = 1
        np.save(made[f"region{k}"], region)
        made[f"names{k}"] = folder / f"names{k}.txt"
        made[f"names{k}"].write_text("\n".join(f"f{i}-{k}" for i in range(6)) + "\n")
        made[f"tok{k}"] = tokenizer(folder / f"tokenizer{k}.json", shift=k - 1)
    return made
