"""A model given as a Hugging Face Optimum export folder (model.onnx, config.json with id2label,
tokenizer.json, preprocessor_config.json): labels, tokenizer and preprocessing come from the
folder with no flags, and give the same records as the flags would. External-data models work
from any working directory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxpath import Explainer
from onnxpath.cli import main
from onnxpath.errors import ModelError

MODELS = Path(__file__).resolve().parents[2] / "models"
pytest.importorskip("tokenizers")


def run_cli(capsys, *args) -> list[dict]:
    code = main(["attribute", *map(str, args), "--no-cache", "-q"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return [json.loads(line) for line in captured.out.splitlines() if line.strip()]


def comparable(line: dict) -> dict:
    return {k: line[k] for k in ("target", "label", "logit", "prob", "top", "tokens", "wrt")
            if k in line}


@pytest.fixture
def text_folder(tmp_path) -> Path:
    folder = tmp_path / "sentiment-optimum"
    folder.mkdir()
    shutil.copy(MODELS / "examples" / "sentiment.onnx", folder / "model.onnx")
    shutil.copy(MODELS / "examples" / "tokenizer.json", folder / "tokenizer.json")
    (folder / "config.json").write_text(json.dumps(
        {"model_type": "bert", "id2label": {"0": "NEG", "1": "POS"},
         "label2id": {"NEG": 0, "POS": 1}}))
    return folder


@pytest.fixture
def image_folder(tmp_path) -> Path:
    folder = tmp_path / "shapes-optimum"
    folder.mkdir()
    shutil.copy(MODELS / "shapes_resnet.onnx", folder / "model.onnx")
    shutil.copy(MODELS / "shapes_preprocess.json", folder / "preprocessor_config.json")
    names = (MODELS / "shapes_labels.txt").read_text().split()
    (folder / "config.json").write_text(json.dumps(
        {"id2label": {str(i): n for i, n in enumerate(names)}}))
    return folder


def test_text_folder_takes_tokenizer_and_labels(capsys, text_folder):
    reviews = MODELS / "examples" / "reviews.txt"
    from_folder = run_cli(capsys, f"{text_folder}/", reviews)
    flagged = run_cli(capsys, MODELS / "examples" / "sentiment.onnx", reviews, "--tokenizer",
                      MODELS / "examples" / "tokenizer.json")
    assert len(from_folder) == len(flagged) > 0
    for a, b in zip(from_folder, flagged, strict=True):
        assert a["label"] == {0: "NEG", 1: "POS"}[a["target"]]
        assert a["tokens"] == b["tokens"]  # the folder's tokenizer, same token scores
        assert a["target"] == b["target"] and a["logit"] == pytest.approx(b["logit"])


def test_image_folder_takes_preprocessing_and_labels(capsys, image_folder):
    photo = MODELS / "samples" / "circle_0.png"
    from_folder = run_cli(capsys, image_folder, photo, "--out", image_folder.parent / "a")
    flagged = run_cli(capsys, MODELS / "shapes_resnet.onnx", photo, "--preprocess",
                      MODELS / "shapes_preprocess.json", "--labels",
                      MODELS / "shapes_labels.txt", "--out", image_folder.parent / "b")
    assert comparable(from_folder[0]) == comparable(flagged[0])
    maps = [np.load(line["outputs"]["npy"]) for line in (from_folder[0], flagged[0])]
    np.testing.assert_array_equal(*maps)
    # A flag still wins over the folder's file.
    other = run_cli(capsys, image_folder, photo, "--labels", MODELS / "shapes_labels.txt")
    assert other[0]["label"] == flagged[0]["label"]


def test_explainer_takes_a_folder(image_folder):
    x = np.random.default_rng(0).random((1, 3, 64, 64)).astype(np.float32)
    from_folder = Explainer(f"{image_folder}/", cache=False).attribute(x, target=[1])
    from_file = Explainer(image_folder / "model.onnx", cache=False).attribute(x, target=[1])
    np.testing.assert_array_equal(from_folder.maps, from_file.maps)


def test_folder_without_one_model_is_refused(tmp_path):
    with pytest.raises(ModelError, match="no .onnx file"):
        Explainer(tmp_path)
    for name in ("encoder.onnx", "decoder.onnx"):
        shutil.copy(MODELS / "shapes_resnet.onnx", tmp_path / name)
    with pytest.raises(ModelError, match="2 .onnx files"):
        Explainer(tmp_path)


@pytest.mark.parametrize("spelling", ["relative", "absolute", "folder"])
def test_external_data_from_any_working_directory(tmp_path, monkeypatch, spelling):
    """Weights in model.onnx_data beside model.onnx, the process started elsewhere."""
    folder = tmp_path / "export"
    folder.mkdir()
    model = onnx.load(MODELS / "shapes_resnet.onnx")
    onnx.save(model, folder / "model.onnx", save_as_external_data=True,
              all_tensors_to_one_file=True, location="model.onnx_data", size_threshold=0)
    elsewhere = tmp_path / "work" / "deeper"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    path = {"relative": Path("../../export/model.onnx"), "absolute": folder / "model.onnx",
            "folder": Path("../../export")}[spelling]
    x = np.random.default_rng(1).random((2, 3, 64, 64)).astype(np.float32)
    maps = Explainer(path, cache=False).attribute(x, target=[0, 2]).maps
    expected = Explainer(MODELS / "shapes_resnet.onnx", cache=False).attribute(
        x, target=[0, 2]).maps
    np.testing.assert_allclose(maps, expected, rtol=1e-6, atol=1e-7)


def test_pathway_takes_the_folder(capsys, image_folder):
    photo = MODELS / "samples" / "circle_0.png"
    assert main(["pathway", str(image_folder), str(photo), "--no-cache"]) == 0
    from_folder = capsys.readouterr().out
    assert main(["pathway", str(MODELS / "shapes_resnet.onnx"), str(photo), "--no-cache",
                 "--preprocess", str(MODELS / "shapes_preprocess.json"), "--labels",
                 str(MODELS / "shapes_labels.txt")]) == 0
    assert from_folder == capsys.readouterr().out
