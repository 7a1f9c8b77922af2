"""The exporter corpus (issue 10): every committed model, as its exporter wrote it, against the
float64 input gradient its source framework computed (tests/exporters/build.py; the criterion
is in checks.py). Models without a gradient (tree ensembles, ai.onnx.ml classifiers) must run
forward-only methods and refuse gradient methods in one line. Every case also runs through the
CLI: no traceback, ever.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from onnxpath.autodiff.relu_family import RELU_FAMILY
from onnxpath.cli import main

from .checks import cases, example, gradient_error, load, measure, model_path
from .fixture import CORPUS

CASES = cases()


def test_corpus_is_as_documented():
    """At least 25 models from at least 6 sources, each listed in docs/exporters.md's table."""
    metas = [load(name)[0] for name in CASES]
    assert len(metas) >= 25 and len({m["source"] for m in metas}) >= 6
    readme = (Path(__file__).resolve().parents[2] / "docs" / "exporters.md").read_text()
    missing = [m["name"] for m in metas if f"`{m['name']}`" not in readme]
    assert not missing, f"not in docs/exporters.md's Tested exporters table: {missing}"
    size = sum(p.stat().st_size for p in CORPUS.iterdir())
    assert size < 30 * 2**20, f"corpus is {size / 2**20:.1f} MB"


def model_file(name: str) -> Path:
    path = model_path(load(name)[0])
    return path / "model.onnx" if path.is_dir() else path


def pathway_applies(name: str, x: np.ndarray) -> bool:
    """Images up to 64 x 64 with a ReLU-family activation also run `-m pathway` (the zoo's
    224 x 224 models only the gradient, to keep the suite short)."""
    ops = {n.op_type for n in onnx.load(model_file(name)).graph.node}
    # int8 ReLU nets: the quantizer removed the Relu nodes; their clamp is the pathway's ReLU
    folded = "ReLU folded into the quantizer's clamp" in load(name)[0]["covers"]
    return x.ndim == 4 and x.size <= 3 * 64 * 64 and (bool(ops & set(RELU_FAMILY)) or folded)


def pathway_layers(tmp_path, capsys, name: str, image: Path) -> tuple[int, dict]:
    code = main(["attribute", str(CORPUS / f"{name}.onnx"), str(image), "-m",
                 "gradient,pathway", "--out", str(tmp_path / name)])
    out, err = capsys.readouterr()
    assert code == 0 and "Traceback" not in err, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["method"] for line in lines] == ["gradient", "pathway"]
    ops = Counter(n.op_type for n in onnx.load(CORPUS / f"{name}.onnx").graph.node)
    return lines[1]["extras"]["layers"], ops


def test_relu6_networks_get_a_pathway_over_every_relu6_with_no_flags(tmp_path, capsys):
    """Issue 10's acceptance: `onnxpath attribute mobilenet_v2_relu6.onnx img.jpg -m
    gradient,pathway` with no flags; the pathway runs over every ReLU6 (Clip) layer, and a
    network mixing ReLU6 and ReLU gets all of them."""
    image = tmp_path / "img.jpg"
    pixels = np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(image)
    layers, ops = pathway_layers(tmp_path, capsys, "torch_mobilenet_v2_relu6", image)
    assert ops["Relu"] == 0 and layers == ops["Clip"] == 10
    layers, ops = pathway_layers(tmp_path, capsys, "torch_mixed_relu6_relu", image)
    assert ops["Relu"] == 1 and layers == ops["Clip"] + ops["Relu"] == 10


# Known, measured, and not a gradient-rule error: ONNX Runtime's float32 forward puts one ReLU
# input of zoo_squeezenet (5e-8 of its layer's range away from zero in float64) on the other
# side of zero, so its exact gradient for that forward differs from the float64 one (2.1e-3);
# torch's float32 run, which sets the tolerance, happens not to flip it.
RUNTIME_KINK = {"zoo_squeezenet"}


def gradient_params():
    """Models with gradients only: the forward-only ones (ai.onnx.ml ops) are checked by
    test_cli_runs_without_traceback, including the one-line refusal of gradient methods."""
    names = [name for name in CASES if load(name)[0]["kind"] == "gradient"]
    return [pytest.param(name, marks=pytest.mark.xfail(
        strict=True, reason="ONNX Runtime float32 flips a ReLU within 5e-8 of zero"))
        if name in RUNTIME_KINK else name for name in names]


@pytest.mark.parametrize("name", gradient_params())
def test_input_gradient_matches_float64_reference(name):
    meta, _ = load(name)
    error, tol = gradient_error(name)
    f32 = meta["float32_error"]
    print(f"\n[corpus] {name:36s} {measure(meta)} error {error:.2e}  tolerance {tol:.2e}  "
          f"float32 {f32 if f32 is None else format(f32, '.2e')}")
    assert error <= tol, f"{name}: relative error {error:.3g} > {tol:.3g}"


@pytest.mark.parametrize("name", CASES)
def test_cli_runs_without_traceback(name, tmp_path, capsys):
    """`attribute` end to end: exit 0 with a JSON line, or for forward-only models a one-line
    refusal of the gradient and a working occlusion run."""
    meta, data = load(name)
    x = example(data)
    if isinstance(x, dict):  # several inputs: an .npz of named arrays
        sample = tmp_path / "x.npz"
        np.savez(sample, **x)
    else:
        sample = tmp_path / "x.npy"
        np.save(sample, x)
    model = model_path(meta)
    methods = ("gradient,pathway" if not isinstance(x, dict) and pathway_applies(name, x)
               else "gradient")
    if meta["kind"] == "gradient":
        code = main(["attribute", str(model), str(sample), "-m", methods, "--out",
                     str(tmp_path / "out")])
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        assert code == 0, err
        lines = [json.loads(line) for line in out.splitlines() if line.strip()]
        assert lines and all(line["error"] is None for line in lines)
        return
    code = main(["attribute", str(model), str(sample), "-m", "gradient", "--out",
                 str(tmp_path / "out")])
    _, err = capsys.readouterr()
    assert "Traceback" not in err and code in (1, 2) and len(err.strip().splitlines()) == 1
    code = main(["attribute", str(model), str(sample), "-m", "occlusion", "--out",
                 str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert code == 0, err


def test_an_optimum_folder_explains_with_its_own_labels(tmp_path, capsys):
    """`onnxpath attribute DIR/ x.npy`: the folder's config.json names the classes."""
    meta, data = load("optimum_image_folder")
    np.save(tmp_path / "x.npy", data["x"])
    code = main(["attribute", f"{model_path(meta)}/", str(tmp_path / "x.npy"), "-m", "gradient",
                 "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 0, err
    line = json.loads(out.splitlines()[0])
    labels = json.loads((model_path(meta) / "config.json").read_text())["id2label"]
    assert line["target"] == meta["target"] and line["label"] == labels[str(meta["target"])]
