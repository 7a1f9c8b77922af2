"""`onnxpath pathway` and the pathway options of `onnxpath attribute`."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

from onnxpath.cli import main
from onnxpath.pathways.network import masked_network

from .conftest import image


@pytest.fixture
def files(tmp_path, resnet):
    model = tmp_path / "resnet.onnx"
    onnx.save(resnet.proto, str(model))
    x = image(31)
    np.save(tmp_path / "x.npy", x[0])
    return tmp_path, model, x


def test_pathway_command_reports_saves_and_exports(files, resnet, capsys):
    tmp, model, x = files
    code = main(["pathway", str(model), str(tmp / "x.npy"), "--prune", "75", "--json",
                 "--masks", str(tmp / "m.npz"), "--export", str(tmp / "pruned.onnx")])
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    assert record["prune_percent"] == 75 and record["selection"] == "contribution"
    assert len(record["layers"]) == 5
    row = record["layers"][0]
    assert set(row) == {"layer", "op_type", "neurons", "kept", "kept_percent", "dead_percent"}
    assert record["kept"] == sum(r["kept"] for r in record["layers"])
    assert record["output_change"] == pytest.approx(
        abs(record["prob_masked"] - record["prob"]) / record["prob"])

    saved = np.load(tmp / "m.npz")
    masks = [saved[f"mask_{k:03d}"] for k in range(len(saved["layers"]))]
    assert sum(int(m.sum()) for m in masks) == record["kept"]
    net = masked_network(resnet.engine(x))
    masked = net.logits(x, [m[None] for m in masks])
    session = ort.InferenceSession(str(tmp / "pruned.onnx"), providers=["CPUExecutionProvider"])
    exported = session.run(None, {"x": x})[0]
    assert np.abs(exported - masked).max() <= 1e-4


def test_pathway_command_prints_a_table(files, capsys):
    tmp, model, _ = files
    assert main(["pathway", str(model), str(tmp / "x.npy"), "--keep", "20", "--per-layer"]) == 0
    out = capsys.readouterr().out
    assert "kept %" in out and "dead %" in out and "output change" in out
    assert "prune 80%" in out


def test_attribute_takes_the_pathway_options(files, capsys):
    tmp, model, _ = files
    code = main(["attribute", str(model), str(tmp / "x.npy"), "-m", "pathway,gradient",
                 "--keep", "30", "--selection", "random", "--layer-regex", "blocks",
                 "--out", str(tmp / "out")])
    assert code == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["method"] for r in records] == ["pathway", "gradient"]
    assert records[0]["params"]["keep"] == 30 and records[0]["error"] is None
    assert records[0]["params"]["prune_percent"] == 70  # the effective P, always reported
    raw = np.load(records[0]["outputs"]["npy"])
    assert raw.shape == (3, 32, 32)


def test_conflicting_prune_and_keep_is_a_usage_error(files, capsys):
    tmp, model, _ = files
    assert main(["pathway", str(model), str(tmp / "x.npy"), "--prune", "80",
                 "--keep", "30"]) == 2
    assert "disagree" in capsys.readouterr().err


def test_export_of_an_external_data_model_runs_in_onnx_runtime(tmp_path, vgg, capsys):
    """The baked pathway of a model stored with external data is one file when it fits one
    protobuf (past 2 GB, `<out>.data` beside it: tests/engine/test_memory.py), and computes the
    masked network's logits."""
    model = tmp_path / "vgg.onnx"
    proto = onnx.ModelProto()
    proto.CopyFrom(vgg.proto)  # onnx.save turns the tensors it writes out into references
    onnx.save(proto, str(model), save_as_external_data=True, location="vgg.data",
              size_threshold=0)
    x = image(32)
    np.save(tmp_path / "x.npy", x[0])
    out = tmp_path / "out" / "pruned.onnx"
    assert main(["pathway", str(model), str(tmp_path / "x.npy"), "--json", "--export",
                 str(out), "--masks", str(tmp_path / "m.npz")]) == 0
    capsys.readouterr()
    assert out.exists()
    saved = np.load(tmp_path / "m.npz")
    masks = [saved[f"mask_{k:03d}"][None] for k in range(len(saved["layers"]))]
    net = masked_network(vgg.engine(x))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert np.abs(session.run(None, {"x": x})[0] - net.logits(x, masks)).max() <= 1e-4


def test_pathway_takes_every_preprocessing_flag(files, capsys, tmp_path):
    """--resize, --crop, --scale, --bgr, --layout and --preprocess, as attribute has them."""
    _, model, _ = files
    pixels = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "cat.png")
    np.save(tmp_path / "cat.npy", (pixels[..., ::-1] / 255).transpose(2, 0, 1)
            .astype(np.float32))
    config = tmp_path / "preprocessor_config.json"
    config.write_text(json.dumps({"image_mean": [0, 0, 0], "image_std": [1, 1, 1]}))
    records = []
    for given in (["cat.npy"],
                  ["cat.png", "--preprocess", config, "--resize", "0", "--no-crop", "--scale",
                   "1/255", "--bgr", "--layout", "nchw", "--size", "32x32"],
                  ["cat.png", "--preprocess", config, "--scale", "1/255", "--rgb"]):
        args = [str(tmp_path / given[0]), *map(str, given[1:])]
        assert main(["pathway", str(model), *args, "--json", "-t", "1"]) == 0
        records.append(json.loads(capsys.readouterr().out))
    assert records[1]["prob"] == pytest.approx(records[0]["prob"], rel=1e-5)
    assert records[1]["kept"] == records[0]["kept"]
    assert records[2]["prob"] != pytest.approx(records[0]["prob"], rel=1e-5)  # RGB differs


def test_pathway_target_is_one_class(files, capsys, tmp_path):
    tmp, model, _ = files
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"class{k}" for k in range(10)) + "\n")
    assert main(["pathway", str(model), str(tmp / "x.npy"), "-t", "Class3", "--labels",
                 str(labels), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["target"] == 3
    assert main(["pathway", str(model), str(tmp / "x.npy"), "-t", "top3"]) == 2
    err = capsys.readouterr().err
    assert "--target top3: pathway explains one class" in err and len(err.splitlines()) == 1


def test_a_target_past_the_classes_is_one_line(files, capsys):
    """Not a bug line about an index out of bounds: the message attribute gives."""
    tmp, model, _ = files
    assert main(["pathway", str(model), str(tmp / "x.npy"), "--target", "99"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("onnxpath: error: target 99 is out of range: the model has ")
    assert len(err.strip().splitlines()) == 1
