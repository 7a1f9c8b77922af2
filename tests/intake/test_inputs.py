"""Inputs as exporters write them (issue #10 "Inputs"): batch dims, integer and uint8 inputs
normalised in the graph, NHWC layouts, several inputs from one .npz."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from onnxpath import Explainer
from tests.intake import intake_models as m
from tests.intake.test_outputs import TOL, cli, save
from tests.oracle import relative_error


@pytest.mark.parametrize("how", ["name", "-1", "0", "none", "1"])
def test_batch_dims_as_exporters_write_them(how, tmp_path, capsys):
    model = m.set_batch_dim(m.mlp_two_outputs(), how)
    x = np.random.default_rng(6).standard_normal((2, 6)).astype(np.float32)
    result = Explainer(model, cache=False).attribute(x, "gradient", target=1)
    assert relative_error(result.maps, m.mlp_reference(x, 1)) < TOL
    path = save(model, tmp_path)
    np.save(tmp_path / "a.npy", x[0])
    np.save(tmp_path / "b.npy", x[1])
    code, lines, err = cli(capsys, "attribute", path, tmp_path / "a.npy", tmp_path / "b.npy",
                           "-b", "2", "-m", "gradient,integrated-gradients", "--steps", "4")
    assert code == 0, err
    assert all(r["error"] is None for r in lines)


def torch_uint8_reference(x: np.ndarray, target: int) -> np.ndarray:
    """d logit[target] / d Cast(x) in float64 (the tensor onnxpath attributes)."""
    xf = torch.tensor(x.astype(np.float64), requires_grad=True)
    nchw = (xf * float(m.NHWC["scale"]) - float(m.NHWC["mean"])).permute(0, 3, 1, 2)
    w = torch.tensor(m.NHWC["w"], dtype=torch.float64)
    r = torch.relu(torch.nn.functional.conv2d(nchw, w, padding=1))
    logits = r.mean(dim=(2, 3)) @ torch.tensor(m.NHWC["fc"], dtype=torch.float64).T
    logits[:, target].sum().backward()
    return xf.grad.numpy()


def test_uint8_nhwc_input_normalised_in_the_graph(tmp_path, capsys):
    """Attributed w.r.t. the Cast output, named in `wrt`; the map is NHWC; the PNG is right."""
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    result = Explainer(m.uint8_nhwc(), cache=False).attribute(pixels[None], target=2)
    assert result.wrt == "xf" and result.maps.shape == (1, 8, 8, 3)
    assert relative_error(result.maps, torch_uint8_reference(pixels[None], 2)) < TOL
    path = save(m.uint8_nhwc(), tmp_path)
    Image.fromarray(pixels).save(tmp_path / "img.png")
    code, lines, err = cli(capsys, "attribute", path, tmp_path / "img.png", "-o",
                           tmp_path / "out", "-t", "2")
    assert code == 0, err
    (line,) = lines
    assert line["wrt"] == "xf" and line["error"] is None
    saved = np.load(line["outputs"]["npy"])
    # The image reached the model as raw 0..255 pixels (uint8 input: no scaling).
    assert relative_error(saved[None], torch_uint8_reference(pixels[None], 2)) < TOL
    with Image.open(line["outputs"]["png"]) as png:
        assert png.size == (8, 8)


def test_token_ids_with_an_attention_mask_from_npz_and_defaults(tmp_path, capsys):
    """int64 ids: no traceback; the map is T×D over the embedding output; the mask defaults to
    ones, or comes from the .npz."""
    ids = np.array([3, 7, 1, 19, 0], np.int64)
    mask = np.array([1, 1, 1, 0, 0], np.int64)
    model = m.token_classifier()
    explainer = Explainer(model, cache=False)
    result = explainer.attribute({"input_ids": ids[None], "attention_mask": mask[None]},
                                 target=2)
    assert result.wrt == "embedded" and result.maps.shape == (1, 5, 6)
    assert relative_error(result.maps[0], m.token_reference(mask, 2)) < TOL
    ones = explainer.attribute(ids[None], target=2)  # the mask defaults to ones
    assert relative_error(ones.maps[0], m.token_reference(np.ones(5), 2)) < TOL
    path = save(model, tmp_path)
    np.savez(tmp_path / "example.npz", input_ids=ids, attention_mask=mask)
    np.save(tmp_path / "ids.npy", ids[None])
    code, lines, err = cli(capsys, "attribute", path, tmp_path / "example.npz",
                           tmp_path / "ids.npy", "-t", "2", "-o", tmp_path / "out",
                           "-m", "gradient,integrated-gradients,occlusion", "--window", "1",
                           "--stride", "1", "--steps", "4", "--baseline", "zero")
    assert code == 0, err
    assert all(r["error"] is None and r["wrt"] == "embedded" for r in lines)
    masked, defaulted = np.load(lines[0]["outputs"]["npy"]), np.load(lines[3]["outputs"]["npy"])
    assert relative_error(masked, m.token_reference(mask, 2)) < TOL
    assert relative_error(defaulted, m.token_reference(np.ones(5), 2)) < TOL
    # Integrated gradients of a model linear in the embeddings: exactly x * gradient.
    ig = np.load(lines[1]["outputs"]["npy"])
    embedded = m.TEXT["emb"][ids].astype(np.float64)
    assert relative_error(ig, embedded * m.token_reference(mask, 2)) < 1e-4


def test_an_npz_naming_an_unknown_input_is_an_error_line(tmp_path, capsys):
    path = save(m.token_classifier(), tmp_path)
    np.savez(tmp_path / "bad.npz", input_ids=np.zeros(3, np.int64), tokens=np.zeros(3))
    code, lines, err = cli(capsys, "attribute", path, tmp_path / "bad.npz")
    assert code == 1 and "tokens" in lines[0]["error"] and "Traceback" not in err


def test_wrt_names_any_tensor(tmp_path):
    """--wrt: the gradient with respect to an inner tensor (here the hidden pre-activation)."""
    x = np.random.default_rng(8).standard_normal((2, 6)).astype(np.float32)
    result = Explainer(m.mlp_two_outputs(), cache=False, wrt="pre").attribute(x, target=4)
    pre = x.astype(np.float64) @ m.MLP["w1"].T.astype(np.float64) + m.MLP["b1"]
    expected = (pre > 0) * m.MLP["w2"].astype(np.float64)[4][None]
    assert result.wrt == "pre" and relative_error(result.maps, expected) < TOL


def test_check_grad_and_inspect_on_integer_inputs(tmp_path, capsys):
    path = save(m.uint8_nhwc(), tmp_path)
    code, _, err = cli(capsys, "check-grad", path, "--directions", "3")
    assert code == 0, err
    code, _, err = cli(capsys, "inspect", path)
    assert code == 0, err
    path = save(m.token_classifier(), tmp_path, "text.onnx")
    from onnxpath.tools.inspect import inspect_model
    report = inspect_model(path)
    assert report["wrt"]["tensor"] == "embedded" and report["wrt"]["context"] == [
        "attention_mask"]
    assert onnx.load(str(path)).graph.input[0].name == "input_ids"


def test_single_example_commands_take_an_npz(tmp_path, capsys):
    """check-grad and pathway on a multi-input model, from an .npz; --wrt naming the integer
    input still attributes the float tensor computed from it."""
    path = save(m.token_classifier(), tmp_path)
    np.savez(tmp_path / "example.npz", input_ids=np.array([3, 7, 1, 19, 0]),
             attention_mask=np.array([1, 1, 1, 0, 0]))
    code, _, err = cli(capsys, "check-grad", path, "-i", tmp_path / "example.npz", "-t", "1")
    assert code == 0, err
    result = Explainer(m.token_classifier(), cache=False, wrt="input_ids").attribute(
        np.array([[3, 7, 1, 19, 0]]), target=1)
    assert result.wrt == "embedded"
    assert relative_error(result.maps[0], m.token_reference(np.ones(5), 1)) < TOL


def test_a_modality_can_plug_in_its_wrt_finder(monkeypatch):
    """WRT_FINDERS: tried before the generic rule for integer inputs (how text plugs in)."""
    from onnxpath.intake import model as model_module

    def finder(model, name, logits, infos):
        return ("masked", "the masked embeddings, by a plug-in") if name == "input_ids" \
            else None

    monkeypatch.setattr(model_module, "WRT_FINDERS", [finder])
    mask = np.array([1, 1, 0, 1, 1])
    result = Explainer(m.token_classifier(), cache=False).attribute(
        {"input_ids": np.array([[3, 7, 1, 19, 0]]), "attention_mask": mask[None]}, target=0)
    assert result.wrt == "masked"
    # d logit / d masked does not see the mask: the plain weight row for every token.
    assert relative_error(result.maps[0], m.token_reference(np.ones(5), 0)) < TOL


def test_export_of_an_integer_input_model_takes_its_own_inputs(tmp_path, capsys):
    """The exported gradient graph takes uint8 pixels and returns d logit / d Cast(x)."""
    import onnxruntime as ort

    path = save(m.uint8_nhwc(), tmp_path)
    code, _, err = cli(capsys, "export", path, "-o", tmp_path / "g.onnx")
    assert code == 0, err
    session = ort.InferenceSession(str(tmp_path / "g.onnx"))
    assert [i.name for i in session.get_inputs()] == ["x"]
    pixels = np.random.default_rng(10).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    logits, target, grad = session.run(["logits", "target", "grad"], {"x": pixels})
    for i in range(2):
        expected = torch_uint8_reference(pixels[i:i + 1], int(target[i]))
        assert relative_error(grad[i:i + 1], expected) < TOL
