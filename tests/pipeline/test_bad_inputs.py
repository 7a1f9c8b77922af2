"""Every bad input gets one error line (no traceback), the right exit code and no output file,
while the good inputs of the same batch complete."""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys

import numpy as np
import onnx
import pytest
from PIL import Image
from pipeline_models import classifier, run_cli, save_png

GOOD = 2  # good inputs in each batch below


def make_bad_inputs(folder) -> dict[str, tuple]:
    """name -> (path, a phrase its error must contain)."""
    folder.mkdir(parents=True, exist_ok=True)
    full = io.BytesIO()
    Image.fromarray(np.full((40, 40, 3), 120, np.uint8)).save(full, "PNG")
    (folder / "truncated.png").write_bytes(full.getvalue()[:60])
    jpeg = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)) \
        .save(jpeg, "JPEG")
    (folder / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (folder / "text.jpg").write_text("this is a text file with an image suffix\n")
    (folder / "notes.txt").write_text("not an image at all\n")
    np.save(folder / "wrong_shape.npy", np.zeros((3, 8, 8), np.float32))
    np.save(folder / "wrong_channels.npy", np.zeros((4, 16, 16), np.float32))
    np.save(folder / "complex.npy", np.zeros((3, 16, 16), np.complex64))
    np.save(folder / "bool.npy", np.zeros((3, 16, 16), bool))
    np.save(folder / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    (folder / "pickled.npy").write_bytes(pickle.dumps(np.zeros((3, 16, 16), np.float32)))
    np.savez(folder / "archive.npz", x=np.zeros((3, 16, 16), np.float32))
    (folder / "archive.npz").rename(folder / "archive.npy")
    np.save(folder / "truncated.npy", np.ones((3, 16, 16), np.float32))
    data = (folder / "truncated.npy").read_bytes()
    (folder / "truncated.npy").write_bytes(data[: len(data) - 100])
    nan = np.zeros((3, 16, 16), np.float32)
    nan[0, 0, 0] = np.nan
    np.save(folder / "nan_input.npy", nan)
    np.save(folder / "overflow.npy", np.full((3, 16, 16), 3e38, np.float32))
    return {
        "truncated.png": ("cannot read", ),
        "truncated.jpg": ("cannot read", ),
        "text.jpg": ("cannot read", ),
        "notes.txt": ("cannot read", ),
        "missing.png": ("not found", ),
        "wrong_shape.npy": ("does not match the model input", ),
        "wrong_channels.npy": ("(4, 16, 16) does not match", ),
        "complex.npy": ("not a real number type", ),
        "bool.npy": ("not a real number type", ),
        "objects.npy": ("never loads pickles", ),
        "pickled.npy": ("not a .npy file", ),
        "archive.npy": ("not a .npy file", ),
        "truncated.npy": ("cannot read", ),
        "nan_input.npy": ("NaN or Inf", ),
        "overflow.npy": ("NaN or Inf", ),
    }


def test_each_bad_input_gets_one_error_line_and_no_file(tmp_path):
    model = classifier(tmp_path / "tiny.onnx")
    bad = make_bad_inputs(tmp_path / "bad")
    good = [save_png(tmp_path / "good" / "first.png"), tmp_path / "good" / "second.npy"]
    np.save(good[1], np.random.default_rng(1).standard_normal((3, 16, 16)).astype(np.float32))
    order = [good[0], *(tmp_path / "bad" / name for name in bad), good[1]]
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "onnxpath", "attribute", str(model),
                             *map(str, order), "-o", str(out), "-b", "4"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["input"] for line in lines] == [str(p) for p in order]
    assert lines[0]["error"] is None and lines[-1]["error"] is None
    for line, (name, (phrase,)) in zip(lines[1:-1], bad.items(), strict=True):
        assert line["error"] is not None and "\n" not in line["error"], name
        assert phrase in line["error"], (name, line["error"])
        assert line["outputs"] == {}, name
    written = sorted(p.name for p in out.glob("[!.]*"))  # not .onnxpath, the resume state
    assert written == ["first.gradient.npy", "first.gradient.png", "second.gradient.npy"]


def test_nan_in_the_model_output_is_reported_not_written(capsys, tmp_path):
    model = classifier(tmp_path / "tiny.onnx")
    np.save(tmp_path / "huge.npy", np.full((3, 16, 16), 3e38, np.float32))
    np.save(tmp_path / "fine.npy", np.ones((3, 16, 16), np.float32))
    code, lines, err = run_cli(capsys, model, tmp_path / "huge.npy", tmp_path / "fine.npy",
                               "--npz", tmp_path / "maps.npz", "-b", "2")
    assert code == 1
    assert "NaN or Inf" in lines[0]["error"] and lines[0]["outputs"] == {}
    assert lines[1]["error"] is None
    assert list(np.load(tmp_path / "maps.npz")) == ["fine.gradient"]


def test_decompression_bombs_keep_pillows_limit(capsys, tmp_path, monkeypatch, model):
    """Pillow's limit stays as set (here lowered to keep the test small): over twice the limit
    is an error line, between once and twice a one-line warning."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)
    bomb = save_png(tmp_path / "bomb.png", size=(30, 30))  # 900 px > 2 x 200
    large = save_png(tmp_path / "large.png", size=(15, 20))  # 300 px, in (200, 400]
    small = save_png(tmp_path / "small.png", size=(10, 10))
    code, lines, err = run_cli(capsys, model, bomb, large, small, "-o", tmp_path / "out")
    assert code == 1
    assert "decompression bomb" in lines[0]["error"] and lines[0]["outputs"] == {}
    assert lines[1]["error"] is None and lines[2]["error"] is None
    warning = [line for line in err.splitlines() if "warning" in line]
    assert len(warning) == 1 and "large.png" in warning[0], err
    assert not (tmp_path / "out" / "bomb.gradient.npy").exists()


def test_an_image_for_a_model_with_two_channels(capsys, tmp_path):
    model = classifier(tmp_path / "two.onnx", channels=2)
    np.save(tmp_path / "ok.npy", np.ones((2, 16, 16), np.float32))
    code, lines, _ = run_cli(capsys, model, save_png(tmp_path / "rgb.png"), tmp_path / "ok.npy")
    assert code == 1
    assert "2-channel input" in lines[0]["error"] and lines[1]["error"] is None


def run_subprocess(*args):
    return subprocess.run([sys.executable, "-m", "onnxpath", "attribute", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def assert_one_line_exit_2(result, phrase):
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxpath: error:"), result.stderr
    assert phrase in lines[0], lines[0]


def test_external_data_outside_the_model_folder_is_refused(tmp_path, images):
    source = onnx.load(classifier(tmp_path / "src.onnx"))
    (tmp_path / "secret").mkdir()
    onnx.save(source, tmp_path / "secret" / "m.onnx", save_as_external_data=True,
              all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    model = onnx.load(tmp_path / "secret" / "m.onnx", load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../secret/weights.bin"
    (tmp_path / "models").mkdir()
    onnx.save(model, tmp_path / "models" / "escape.onnx")
    result = run_subprocess(tmp_path / "models" / "escape.onnx", images[0],
                            "-o", tmp_path / "out")
    assert_one_line_exit_2(result, "outside the model's folder")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["a-file", "under-a-file"])
def test_an_unwritable_out_stops_before_any_input(tmp_path, model, images, where):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    out = blocker if where == "a-file" else blocker / "sub"
    result = run_subprocess(model, *images, "-o", out)
    assert_one_line_exit_2(result, "cannot write to --out")


def test_an_unwritable_npz_stops_before_any_input(tmp_path, model, images):
    (tmp_path / "blocker").write_text("x")
    result = run_subprocess(model, *images, "--npz", tmp_path / "blocker" / "maps.npz")
    assert_one_line_exit_2(result, "cannot write to --npz")


def test_inputs_are_never_overwritten(capsys, tmp_path, model):
    """An input named like an output, in the output folder itself."""
    victim = tmp_path / "out" / "img.gradient.npy"
    victim.parent.mkdir()
    np.save(victim, np.ones((3, 16, 16), np.float32))
    before = victim.read_bytes()
    src = tmp_path / "img.npy"
    np.save(src, np.ones((3, 16, 16), np.float32))
    code, lines, _ = run_cli(capsys, model, src, victim, "-o", tmp_path / "out")
    assert victim.read_bytes() == before
    assert code == 1 and "refusing to overwrite" in lines[0]["error"]
