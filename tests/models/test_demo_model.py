"""The committed demo model (models/shapes_resnet.onnx) and its scene generator.

These are the artifacts the README's first command runs on, so they are checked as a user would
meet them: the ONNX file in ONNX Runtime, the sample PNGs through numpy preprocessing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

from onnxpath.evaluate import scenes as shapes

MODELS = Path(__file__).resolve().parents[2] / "models"
CLASSES = shapes.CLASSES
make_dataset = shapes.make_dataset
make_scene = shapes.make_scene
ONNX_PATH = MODELS / "shapes_resnet.onnx"
SAMPLES = MODELS / "samples"
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
# Seeds not used by the training script (0 train, 1 held-out, 2 samples).
FRESH_SEED = 12345


def normalise(images: np.ndarray) -> np.ndarray:
    x = (images.astype(np.float32) / 255.0 - MEAN) / STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


@pytest.fixture(scope="module")
def session() -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(ONNX_PATH), opts, providers=["CPUExecutionProvider"])


def sample_paths() -> list[Path]:
    return sorted(SAMPLES.glob("*.png"))


def test_model_file_is_small_and_valid() -> None:
    assert ONNX_PATH.stat().st_size < 2 * 1024 * 1024
    onnx.checker.check_model(onnx.load(str(ONNX_PATH)))


def test_model_signature(session: ort.InferenceSession) -> None:
    (inp,) = session.get_inputs()
    (out,) = session.get_outputs()
    assert inp.name == "input" and inp.type == "tensor(float)"
    assert inp.shape[1:] == [3, 64, 64] and isinstance(inp.shape[0], str)
    assert out.name == "logits" and out.shape[1:] == [len(CLASSES)]
    for batch in (1, 3):
        (logits,) = session.run(None, {"input": np.zeros((batch, 3, 64, 64), np.float32)})
        assert logits.shape == (batch, len(CLASSES)) and logits.dtype == np.float32


def test_model_outputs_logits_not_probabilities(session: ort.InferenceSession) -> None:
    images, _, _ = make_dataset(8, FRESH_SEED + 1)
    (logits,) = session.run(None, {"input": normalise(images)})
    assert not np.allclose(logits.sum(1), 1.0, atol=1e-3)
    assert (logits < 0).any()
    ops = {node.op_type for node in onnx.load(str(ONNX_PATH)).graph.node}
    assert "Softmax" not in ops


def test_metadata_and_sidecars_agree() -> None:
    model = onnx.load(str(ONNX_PATH))
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["onnxpath.labels"]) == CLASSES
    pre = json.loads(meta["onnxpath.preprocess"])
    assert pre["size"] == [64, 64]
    np.testing.assert_allclose(pre["mean"], MEAN, rtol=1e-6)
    np.testing.assert_allclose(pre["std"], STD, rtol=1e-6)
    assert abs(pre["scale"] - 1 / 255) < 1e-12

    labels = (MODELS / "shapes_labels.txt").read_text().splitlines()
    assert labels == CLASSES
    hf = json.loads((MODELS / "shapes_preprocess.json").read_text())
    assert hf["size"] == {"height": 64, "width": 64}
    assert hf["do_normalize"] and hf["do_rescale"]
    np.testing.assert_allclose(hf["image_mean"], MEAN, rtol=1e-6)
    np.testing.assert_allclose(hf["image_std"], STD, rtol=1e-6)
    assert abs(hf["rescale_factor"] - 1 / 255) < 1e-12


def test_samples_are_classified_correctly(session: ort.InferenceSession) -> None:
    paths = sample_paths()
    assert len(paths) >= 6
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    assert images.shape[1:] == (64, 64, 3)
    (logits,) = session.run(None, {"input": normalise(images)})
    predicted = [CLASSES[i] for i in logits.argmax(1)]
    expected = [p.stem.rsplit("_", 1)[0] for p in paths]
    assert predicted == expected


@pytest.mark.parametrize("path", sample_paths(), ids=lambda p: p.stem)
def test_sample_masks_match_images(path: Path) -> None:
    mask = np.asarray(Image.open(MODELS / "sample_masks" / path.name))
    assert mask.shape == (64, 64)
    assert set(np.unique(mask)) <= {0, 255}
    assert 60 <= (mask > 0).sum() <= 0.4 * 64 * 64


def test_heldout_accuracy(session: ort.InferenceSession) -> None:
    images, labels, _ = make_dataset(200, FRESH_SEED)
    (logits,) = session.run(None, {"input": normalise(images)})
    accuracy = (logits.argmax(1) == labels).mean()
    assert accuracy >= 0.90, f"held-out accuracy {accuracy:.3f}"


def test_generator_is_deterministic() -> None:
    a = make_dataset(16, 7)
    b = make_dataset(16, 7)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    c = make_dataset(16, 8)
    assert not np.array_equal(a[0], c[0])
    s1 = make_scene(np.random.default_rng(3), cls=2)
    s2 = make_scene(np.random.default_rng(3), cls=2)
    np.testing.assert_array_equal(s1[0], s2[0])
    np.testing.assert_array_equal(s1[2], s2[2])
    assert s1[1] == 2


def test_dataset_shapes_and_balance() -> None:
    images, labels, masks = make_dataset(80, 11)
    assert images.shape == (80, 64, 64, 3) and images.dtype == np.uint8
    assert labels.shape == (80,) and masks.shape == (80, 64, 64) and masks.dtype == bool
    assert np.bincount(labels, minlength=len(CLASSES)).tolist() == [10] * len(CLASSES)


@pytest.mark.parametrize("cls", range(len(CLASSES)), ids=CLASSES)
def test_masks_cover_the_object(cls: int) -> None:
    rng = np.random.default_rng(100 + cls)
    r_min, r_max = shapes.MIN_RADIUS, shapes.MAX_RADIUS
    for _ in range(10):
        image, label, mask = make_scene(rng, cls)
        assert label == cls
        area = int(mask.sum())
        # Between a small star (thin shape, smallest radius) and a large circle.
        assert 0.9 * r_min**2 <= area <= np.pi * (r_max * 1.1) ** 2
        # The object is a single compact region away from the border.
        ys, xs = np.nonzero(mask)
        assert ys.min() > 0 and xs.min() > 0 and ys.max() < 63 and xs.max() < 63
        assert np.ptp(ys) <= 2.3 * r_max and np.ptp(xs) <= 2.3 * r_max
        # The object stands out: colour inside the mask differs from a ring just outside it.
        inside = image[mask].astype(float).mean(0)
        border = _dilate(mask, 3) & ~_dilate(mask, 1)
        outside = image[border].astype(float).mean(0)
        assert np.linalg.norm(inside - outside) > 30


def test_make_scene_rejects_bad_class() -> None:
    with pytest.raises(ValueError):
        make_scene(np.random.default_rng(0), cls=len(CLASSES))


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(steps):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out
