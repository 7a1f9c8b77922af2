"""Preprocessing: presets, flags, a JSON file, ONNX image metadata, and unusual images."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from pipeline_models import classifier, identity_probe, run_cli

from onnxpath.intake.model import load_model
from onnxpath.io.image import load_input, read_image
from onnxpath.io.preprocess import PRESETS, guess_layout, preset_for, resolve_preprocess

SHAPE = (None, 3, 4, 4)
RGB = (200, 100, 50)


def flat(path, colour=RGB, size=(8, 8), mode="RGB"):
    Image.new(mode, (size[1], size[0]), colour).save(path)
    return path


def tensor(path, **flags):
    prep = resolve_preprocess(SHAPE, None, **flags)
    return load_input(path, SHAPE, prep)[0]


@pytest.mark.parametrize("preset, expected", [
    ("none", [200 / 255, 100 / 255, 50 / 255]),
    ("inception", [200 / 127.5 - 1, 100 / 127.5 - 1, 50 / 127.5 - 1]),
    ("caffe", [50 - 103.94, 100 - 116.78, 200 - 123.68]),  # BGR, 0-255, BGR means
])
def test_presets(tmp_path, preset, expected):
    x = tensor(flat(tmp_path / "c.png"), preset=preset, size=(4, 4))
    np.testing.assert_allclose(x[:, 0, 0], expected, rtol=1e-5)


def test_imagenet_preset_resizes_the_shorter_side_then_crops():
    prep = PRESETS["imagenet"]
    assert (prep.resize, prep.crop, prep.size) == (256, True, (224, 224))
    assert preset_for((1, 3, 224, 224)) == prep
    assert preset_for((1, 3, 32, 32)) == PRESETS["none"]


def test_flags_override_the_preset(tmp_path):
    image = np.zeros((8, 16, 3), np.uint8)
    image[:, 2:14] = 255  # a white band in the middle: the center crop keeps only it
    Image.fromarray(image).save(tmp_path / "band.png")
    x = tensor(tmp_path / "band.png", preset="none", resize=4, size=(4, 4), scale=1.0,
               mean=(1.0,), std=(2.0,), bgr=True)
    np.testing.assert_allclose(x, (255 - 1) / 2)
    squashed = tensor(tmp_path / "band.png", preset="none", resize=0, size=(4, 4))
    assert squashed.min() < 0.9 and squashed.max() == 1.0  # --resize 0: no crop, dark edges


def test_gray_flag_and_gray_models(tmp_path):
    x = tensor(flat(tmp_path / "c.png"), preset="none", gray=True)
    assert np.allclose(x[0], x[1]) and np.allclose(x[1], x[2])
    gray_model = (None, 1, 4, 4)
    prep = resolve_preprocess(gray_model, None, preset="none")
    assert load_input(tmp_path / "c.png", gray_model, prep)[0].shape == (1, 4, 4)


def test_nhwc_layout_is_guessed_and_flag_wins(tmp_path, capsys):
    assert guess_layout((None, 16, 16, 3)) == "nhwc" and guess_layout((1, 3, 16, 16)) == "nchw"
    model = classifier(tmp_path / "nhwc.onnx", layout="nhwc")
    code, lines, err = run_cli(capsys, model, flat(tmp_path / "c.png"), "-o", tmp_path / "out")
    assert code == 0, err
    assert np.load(lines[0]["outputs"]["npy"]).shape == (16, 16, 3)
    assert lines[0]["outputs"]["png"].endswith(".png")
    prep = resolve_preprocess((None, 3, 4, 4), None, preset="none", layout="nhwc")
    assert prep.layout == "nhwc"


def test_json_preprocessing_file_in_hugging_face_style(tmp_path):
    config = tmp_path / "preprocessor_config.json"
    config.write_text(json.dumps({
        "do_resize": True, "size": {"shortest_edge": 6}, "do_center_crop": True,
        "crop_size": {"height": 4, "width": 4}, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5]}))
    prep = resolve_preprocess(SHAPE, None, config=config)
    assert (prep.size, prep.resize, prep.crop) == ((4, 4), 6, True)
    x = load_input(flat(tmp_path / "c.png"), SHAPE, prep)[0]
    np.testing.assert_allclose(x[:, 0, 0], [(v / 255 - 0.5) / 0.5 for v in RGB], rtol=1e-5)


def test_bad_preprocessing_file_is_a_usage_error(capsys, tmp_path, model):
    bad = tmp_path / "prep.json"
    bad.write_text("{not json")
    code, lines, err = run_cli(capsys, model, flat(tmp_path / "c.png"), "--preprocess", bad)
    assert code == 2 and lines == [] and "not valid JSON" in err


def test_onnx_image_metadata_hints(tmp_path):
    path = classifier(tmp_path / "m.onnx", size=4, metadata={
        "Image.BitmapPixelFormat": "Bgr8", "Image.NominalPixelRange": "NominalRange_0_255"})
    model = load_model(path)
    prep = preset_for((None, 3, 4, 4), model)
    assert prep.bgr and prep.scale == 1.0
    x = load_input(flat(tmp_path / "c.png"), (None, 3, 4, 4), prep)[0]
    np.testing.assert_allclose(x[:, 0, 0], RGB[::-1])
    prep = resolve_preprocess((None, 3, 4, 4), model, preset="none")
    assert not prep.bgr, "an explicit preset overrides the model's hints"


def test_grayscale_rgba_and_16_bit_images(tmp_path):
    gray = tensor(flat(tmp_path / "g.png", colour=128, mode="L"), preset="none")
    np.testing.assert_allclose(gray, 128 / 255)
    rgba = tensor(flat(tmp_path / "a.png", colour=(*RGB, 0), mode="RGBA"), preset="none")
    np.testing.assert_allclose(rgba[:, 0, 0], [v / 255 for v in RGB], rtol=1e-6)
    deep = np.full((8, 8), 40000, np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    x = tensor(tmp_path / "deep.png", preset="none")
    np.testing.assert_allclose(x, round(40000 * 255 / 65535) / 255, rtol=1e-6)


def test_exif_rotation_is_applied(tmp_path):
    """An image stored landscape with orientation 6 (rotate 90° clockwise to view)."""
    stored = np.zeros((4, 8, 3), np.uint8)
    stored[:, :4] = 255  # left half white as stored: the top half once upright
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "rotated.png", exif=exif.tobytes())
    upright = read_image(tmp_path / "rotated.png")
    assert upright.size == (4, 8)  # width 4, height 8
    pixels = np.asarray(upright.convert("L"))
    assert pixels[:4].min() == 255 and pixels[4:].max() == 0


def test_identity_probe_sees_exactly_the_preprocessed_tensor(tmp_path, capsys):
    """End to end through the CLI: --scale and --mean reach the model."""
    model = identity_probe(tmp_path / "probe.onnx")
    code, lines, err = run_cli(capsys, model, flat(tmp_path / "c.png"), "--scale", "1",
                               "--mean", "100", "--std", "1", "--size", "4x4", "-m", "occlusion",
                               "--window", "2", "--stride", "2")
    assert code == 0, err
    top = lines[0]["top"][0]
    assert top["logit"] == pytest.approx(200 - 100)


def test_own_keys_as_the_demo_model_stores_them():
    """`onnxpath.preprocess` metadata: the Preprocess fields, resize as [H, W] (no crop)."""
    from onnxpath.io.preprocess import from_json

    prep = from_json({"size": [64, 64], "resize": [64, 64], "crop": None, "scale": 1 / 255,
                      "mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2], "bgr": False,
                      "layout": "nchw"})
    assert (prep.size, prep.resize, prep.crop) == ((64, 64), None, False)
    assert from_json({"size": [8, 8], "resize": 10}).crop is True
