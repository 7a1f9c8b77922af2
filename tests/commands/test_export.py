"""`onnxpath export`: the gradient graph runs anywhere ONNX Runtime does, with nothing else."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from command_models import classifier, save
from onnx import TensorProto, helper, numpy_helper

from onnxpath import Explainer
from onnxpath.cli import main

# Runs in a fresh interpreter: only onnxruntime and numpy, and proof that nothing else came in.
RUNNER = textwrap.dedent("""
    import sys, numpy as np, onnxruntime as ort
    model, x_path, out_path = sys.argv[1:4]
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    feeds = {"x": np.load(x_path)}
    if len(sys.argv) > 4:
        feeds["seed"] = np.load(sys.argv[4])
    names = [o.name for o in session.get_outputs()]
    np.savez(out_path, **dict(zip(names, session.run(None, feeds))))
    assert "onnxpath" not in sys.modules and "torch" not in sys.modules, "standalone"
""")


def run_standalone(tmp_path, model, x, seed=None):
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    out = tmp_path / "result.npz"
    # -I: isolated, so neither the checkout nor PYTHONPATH is on sys.path
    args = [sys.executable, "-I", str(script), str(model), str(x), str(out)]
    if seed is not None:
        args.append(str(seed))
    result = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return dict(np.load(out))


def attribute_npy(capsys, model, x, out):
    assert main(["attribute", str(model), str(x), "--method", "gradient", "--out", str(out)]) \
        == 0
    line = json.loads(capsys.readouterr().out.splitlines()[0])
    return np.load(line["outputs"]["npy"]), line["target"]


def test_default_export_gives_attributes_gradient_in_a_bare_process(capsys, model_path,
                                                                    tmp_path):
    grad_model = tmp_path / "net.grad.onnx"
    assert main(["export", str(model_path), "-o", str(grad_model)]) == 0
    printed = capsys.readouterr().out
    assert "input  x" in printed and "output grad" in printed and "output target" in printed
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(7).standard_normal((1, 3, 16, 16)).astype(np.float32))
    expected, target = attribute_npy(capsys, model_path, x, tmp_path / "maps")
    got = run_standalone(tmp_path, grad_model, x)
    assert sorted(got) == ["grad", "logits", "target"]
    assert int(got["target"][0]) == target
    np.testing.assert_allclose(got["grad"][0], expected, rtol=1e-5, atol=1e-7)
    assert not list(tmp_path.glob(".*.part")), "written atomically"


def test_target_independent_export_takes_a_seed(capsys, tmp_path):
    model = save(classifier(softmax=True), tmp_path / "sm.onnx")
    grad_model = tmp_path / "sm.grad.onnx"
    assert main(["export", str(model), "-o", str(grad_model), "--target-independent",
                 "--json"]) == 0
    sig = json.loads(capsys.readouterr().out)
    assert [i["name"] for i in sig["inputs"]] == ["x", "seed"]
    assert [o["name"] for o in sig["outputs"]] == ["logits", "grad"]
    assert sig["inputs"][1]["shape"] == ["N", 5]
    x = tmp_path / "x.npy"
    batch = np.random.default_rng(8).standard_normal((2, 3, 16, 16)).astype(np.float32)
    np.save(x, batch)
    one_hot = np.eye(5, dtype=np.float32)[[3, 3]]
    seed = tmp_path / "seed.npy"
    np.save(seed, one_hot)
    got = run_standalone(tmp_path, grad_model, x, seed)
    np.save(x, batch[:1])
    assert main(["attribute", str(model), str(x), "--target", "3", "--out",
                 str(tmp_path / "maps")]) == 0
    line = json.loads(capsys.readouterr().out.splitlines()[0])
    np.testing.assert_allclose(got["grad"][0], np.load(line["outputs"]["npy"]), rtol=1e-5,
                               atol=1e-7)
    assert abs(got["logits"][0, 3] - line["logit"]) < 1e-4, "pre-softmax logits"


def test_external_data_model_exports_with_its_weights_beside(capsys, external_model_path,
                                                             tmp_path):
    grad_model = tmp_path / "export" / "net.grad.onnx"
    assert main(["export", str(external_model_path), "-o", str(grad_model)]) == 0
    assert "net.grad.onnx.data" in capsys.readouterr().out
    assert (tmp_path / "export" / "net.grad.onnx.data").exists()
    x = tmp_path / "x.npy"
    np.save(x, np.ones((1, 3, 16, 16), np.float32))
    got = run_standalone(tmp_path, grad_model, x)
    expected, _ = attribute_npy(capsys, external_model_path, x, tmp_path / "maps")
    np.testing.assert_allclose(got["grad"][0], expected, rtol=1e-5, atol=1e-7)


def test_dynamic_spatial_dims_need_a_size(capsys, tmp_path):
    model = save(classifier(dynamic=True), tmp_path / "dyn.onnx")
    assert main(["export", str(model), "-o", str(tmp_path / "g.onnx")]) == 2
    assert "--size" in capsys.readouterr().err
    assert main(["export", str(model), "-o", str(tmp_path / "g.onnx"), "--size", "24x16",
                 "--json"]) == 0
    sig = json.loads(capsys.readouterr().out)
    assert sig["inputs"][0]["shape"] == ["N", 3, 24, 16]


SENTIMENT = Path(__file__).resolve().parents[2] / "models" / "examples" / "sentiment.onnx"


def test_a_text_model_exports_at_a_fixed_sequence_length(capsys, tmp_path):
    """`export sentiment.onnx --size 1x8`: every input (ids, mask, segments) fixed to 8 tokens,
    `grad` with respect to the embedding output, equal to attribute's gradient. Before, only
    input_ids was fixed and the others left the sequence dynamic: 'Gather along dynamic axis'."""
    grad_model = tmp_path / "sentiment.grad.onnx"
    assert main(["export", str(SENTIMENT), "-o", str(grad_model), "--size", "1x8",
                 "--json"]) == 0
    sig = json.loads(capsys.readouterr().out)
    assert [(v["name"], v["shape"][1:]) for v in sig["inputs"]] == [
        ("input_ids", [8]), ("attention_mask", [8]), ("token_type_ids", [8])]
    assert [v["name"] for v in sig["outputs"]] == ["logits", "target", "grad"]
    ids = np.random.default_rng(0).integers(1, 38, (3, 8)).astype(np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids),
             "token_type_ids": np.zeros_like(ids)}
    feeds["attention_mask"][2, 5:] = 0
    session = ort.InferenceSession(str(grad_model), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds),
                   strict=True))
    explainer = Explainer(SENTIMENT, cache=False)
    for i in range(len(ids)):
        result = explainer.attribute({k: v[i:i + 1] for k, v in feeds.items()}, "gradient")
        assert result.wrt == "/word/Gather_output_0"  # the embedding lookup's output
        assert int(got["target"][i]) == int(result.targets[0])
        np.testing.assert_allclose(got["grad"][i], result.maps[0], rtol=1e-5, atol=1e-7)


def test_an_input_whose_shape_cannot_be_derived_is_one_line(capsys, tmp_path):
    """A second input with a dynamic axis the first has no counterpart for."""
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["y", "axes"], ["pooled"], keepdims=0),
         helper.make_node("Add", ["x", "pooled"], ["logits"])], "two",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, "k"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(np.array([2], np.int64), "axes")])
    model = tmp_path / "two.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    assert main(["export", str(model), "-o", str(tmp_path / "g.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["onnxpath: error: the shape of the model's input 'y' cannot be derived from "
                   "'x' (4,): export needs static shapes for every input"]


def test_a_size_that_is_not_the_fixed_one_is_an_error(capsys, model_path, tmp_path):
    """--size sets dynamic dims (no image is read); on a fixed 16x16 model another size is the
    error attribute gives, not a flag quietly ignored. The fixed size itself is fine."""
    for command in (["export", str(model_path), "-o", str(tmp_path / "g.onnx")],
                    ["inspect", str(model_path)]):
        assert main([*command, "--size", "8x8"]) == 2
        err = capsys.readouterr().err
        assert err.strip() == "onnxpath: error: --size 8x8 does not match the model input 16x16"
        assert main([*command, "--size", "16x16"]) == 0
        capsys.readouterr()
