"""The committed real models: EfficientNet-Lite0 (ImageNet) on the shipped photos, and the ReLU
CNN on scikit-learn's held-out digits. Each is checked as a user meets it: the ONNX file with
its own metadata, inputs read through onnxpath's preprocessing, no flags."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from onnxpath.explainer import Explainer
from onnxpath.io.image import load_input, to_tensor
from onnxpath.io.labels import model_labels
from onnxpath.io.preprocess import preset_for

MODELS = Path(__file__).resolve().parents[2] / "models"
LITE0 = MODELS / "efficientnet_lite0.onnx"
DIGITS = MODELS / "digits_cnn.onnx"


@pytest.fixture(scope="module")
def lite0() -> Explainer:
    return Explainer(LITE0, threads=2)


def test_lite0_metadata_gives_the_tensorflow_preprocessing_and_imagenet_labels(lite0):
    proto = onnx.load(str(LITE0), load_external_data=False)
    prep = preset_for(lite0.input_shape, proto)
    assert (prep.size, prep.resize, prep.crop, prep.resample) == ((224, 224), 256, True,
                                                                  "bicubic")
    assert (prep.scale, prep.mean, prep.std) == (1.0, (127.0,) * 3, (128.0,) * 3)
    labels = model_labels(proto)
    assert labels == (MODELS / "imagenet_labels.txt").read_text().splitlines()
    assert len(set(labels)) == 1000
    assert (labels[0], labels[372], labels[967]) == ("tench", "baboon", "espresso")


def test_lite0_top1_is_right_on_every_shipped_photo(lite0):
    expected = json.loads((MODELS / "photos" / "expected.json").read_text())
    photos = sorted((MODELS / "photos").glob("*.jpg"))
    assert sorted(p.stem for p in photos) == sorted(expected) and len(photos) >= 10
    prep = preset_for(lite0.input_shape, lite0.proto)
    x = np.stack([load_input(p, lite0.input_shape, prep)[0] for p in photos])
    labels = model_labels(lite0.proto)
    top = lite0.predict(x).argmax(axis=1)
    got = {p.stem: labels[t] for p, t in zip(photos, top, strict=True)}
    wrong = {k: v for k, v in got.items() if v not in expected[k]}
    assert not wrong, wrong
    assert got["coffee"] == "espresso" and got["baboon"] == "baboon"


def test_digits_model_is_accurate_on_held_out_digits():
    explainer = Explainer(DIGITS, threads=2)
    prep = preset_for(explainer.input_shape, explainer.proto)
    assert (prep.size, prep.gray) == ((32, 32), True)
    assert model_labels(explainer.proto) == [str(d) for d in range(10)]
    data = np.load(MODELS / "digits_heldout.npz")
    assert data["images"].shape == (597, 8, 8) and data["images"].dtype == np.uint8
    x = np.stack([to_tensor(Image.fromarray(im, "L"), prep, (32, 32), 1)[0]
                  for im in data["images"]])
    accuracy = float((explainer.predict(x).argmax(axis=1) == data["labels"]).mean())
    print(f"\n[digits] held-out accuracy {accuracy:.4f} on {len(x)} digits")
    assert accuracy >= 0.97
    # The sample PNGs a user would pass read through the same preprocessing.
    for path in sorted((MODELS / "digits").glob("*.png")):
        x, _ = load_input(path, explainer.input_shape, prep)
        assert explainer.predict(x[None]).argmax() == int(path.stem.split("_")[0])
