"""Layer and neuron attributions against Captum with identical parameters: --layer for gradient,
input x gradient, integrated gradients, conductance and internal influence; --neuron for
gradient, input x gradient, integrated gradients and conductance. Then the shipped image,
table and text models through `onnxpath attribute`.

Captum runs on a float64 copy of each torch network; onnxpath on the exported float32 ONNX
model. Acceptance: Pearson >= 0.9999 (both sides are deterministic); `pytest -s` prints the
figures. The conv net has a branch that bypasses its second layer (`skip`), so layer IG's
"every other branch still reads x" is exercised, and the MLP has 1-D (dense) layers.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from captum.attr import (
    InternalInfluence,
    LayerConductance,
    LayerGradientXActivation,
    LayerIntegratedGradients,
    NeuronConductance,
    NeuronGradient,
    NeuronIntegratedGradients,
)
from onnx_nets import conv_net
from PIL import Image
from torch import nn

from onnxpath.errors import UsageError
from onnxpath.explainer import Explainer
from onnxpath.methods import resolve_method
from tests.io.io_helpers import run_cli

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "models" / "examples"


class SkipNet(nn.Module):
    """conv-relu (a), conv-relu (b) plus a 1x1 skip from a, pooled, linear."""

    def __init__(self):
        super().__init__()
        self.conv_a, self.relu_a = nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()
        self.conv_b, self.relu_b = nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
        self.skip = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        a = self.relu_a(self.conv_a(x))
        b = self.relu_b(self.conv_b(a)) + self.skip(a)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(b, 1), 1))


class MLP(nn.Module):
    """A table model: 6 features, two dense ReLU layers of 16 units, 2 classes."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                                    nn.Linear(16, 2))

    def forward(self, x):
        return self.layers(x)


def exported(model: nn.Module, example: torch.Tensor, path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return Explainer(path), copy.deepcopy(model).double()


@pytest.fixture(scope="module")
def conv(tmp_path_factory):
    torch.manual_seed(0)
    explainer, model = exported(SkipNet().eval(), torch.zeros(1, 3, 12, 12),
                                tmp_path_factory.mktemp("skip") / "net.onnx")
    x = np.random.default_rng(0).standard_normal((2, 3, 12, 12)).astype(np.float32)
    return explainer, model, x


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    torch.manual_seed(1)
    explainer, model = exported(MLP().eval(), torch.zeros(1, 6),
                                tmp_path_factory.mktemp("mlp") / "net.onnx")
    x = np.random.default_rng(1).standard_normal((3, 6)).astype(np.float32)
    return explainer, model, x


# (ONNX node name, the torch module whose output it is)
CONV_LAYERS = [("/relu_a/Relu", "relu_a"), ("/relu_b/Relu", "relu_b")]
MLP_LAYERS = [("/layers/layers.1/Relu", 1), ("/layers/layers.3/Relu", 3)]


def module_of(model, key):
    return model.layers[key] if isinstance(key, int) else getattr(model, key)


def agree(name: str, ours: np.ndarray, theirs: torch.Tensor) -> None:
    ref = theirs.detach().numpy().astype(np.float64)
    ours = np.asarray(ours, dtype=np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    pearson = np.corrcoef(ours.ravel(), ref.ravel())[0, 1]
    rel = np.linalg.norm(ours - ref) / np.linalg.norm(ref)
    print(f"\n[captum] {name:55s} pearson={pearson:.8f} rel_l2={rel:.2e}")
    assert pearson >= 0.9999, f"{name}: Pearson {pearson}"
    assert rel <= 1e-3, f"{name}: relative L2 {rel}"


def inputs(pair):
    explainer, model, x = pair
    targets = explainer.predict(x).argmax(axis=1)
    return explainer, model, x, torch.from_numpy(x).double(), targets, torch.from_numpy(targets)


def every_layer():
    return [("conv", *c) for c in CONV_LAYERS] + [("mlp", *m) for m in MLP_LAYERS]


@pytest.fixture
def net(request, conv, mlp):
    return {"conv": conv, "mlp": mlp}[request.param]


@pytest.mark.parametrize("net,layer,module", every_layer(), indirect=["net"])
def test_layer_gradient_and_gradient_x_activation(net, layer, module):
    explainer, model, x, xt, targets, tt = inputs(net)
    where = module_of(model, module)
    plain = explainer.attribute(x, "gradient", targets, layer=layer)
    agree(f"LayerGradientXActivation(x=False) {layer}", plain.maps,
          LayerGradientXActivation(model, where, multiply_by_inputs=False).attribute(xt, tt))
    times = explainer.attribute(x, "input-x-gradient", targets, layer=layer)
    agree(f"LayerGradientXActivation {layer}", times.maps,
          LayerGradientXActivation(model, where).attribute(xt, tt))


@pytest.mark.parametrize("net,layer,module", every_layer(), indirect=["net"])
def test_layer_conductance(net, layer, module):
    explainer, model, x, xt, targets, tt = inputs(net)
    result = explainer.attribute(x, "conductance", targets, layer=layer, steps=20)
    theirs, delta = LayerConductance(model, module_of(model, module)).attribute(
        xt, target=tt, n_steps=20, return_convergence_delta=True)
    agree(f"LayerConductance {layer}", result.maps, theirs)
    ours_delta = np.array([e["delta"] for e in result.extras])
    print(f"[captum] conductance delta ours={ours_delta} captum={delta.numpy()}")
    np.testing.assert_allclose(ours_delta, delta.numpy(), atol=1e-4)


@pytest.mark.parametrize("rule", ["gausslegendre", "riemann-trapezoid"])
@pytest.mark.parametrize("net,layer,module", every_layer(), indirect=["net"])
def test_internal_influence(net, layer, module, rule):
    explainer, model, x, xt, targets, tt = inputs(net)
    ours = explainer.attribute(x, "internal-influence", targets, layer=layer, steps=16,
                               rule=rule, internal_batch_size=7).maps
    theirs = InternalInfluence(model, module_of(model, module)).attribute(
        xt, target=tt, n_steps=16, method=rule.replace("-", "_"), internal_batch_size=7)
    agree(f"InternalInfluence {layer} {rule}", ours, theirs)


@pytest.mark.parametrize("baseline", [0.0, 0.25])
@pytest.mark.parametrize("net,layer,module", every_layer(), indirect=["net"])
def test_layer_integrated_gradients(net, layer, module, baseline):
    explainer, model, x, xt, targets, tt = inputs(net)
    reference = np.full_like(x, baseline)
    result = explainer.attribute(x, "integrated-gradients", targets, layer=layer,
                                 steps=20, baseline=reference, internal_batch_size=9)
    where = module_of(model, module)
    theirs = LayerIntegratedGradients(model, where).attribute(
        xt, torch.from_numpy(reference).double(), target=tt, n_steps=20)
    agree(f"LayerIntegratedGradients {layer} baseline={baseline}", result.maps, theirs)
    # The path's ends: f(x), and f with only this layer at its baseline activation (every
    # other branch still reads x), computed in torch with a hook.
    with torch.no_grad():
        at_ref = {}
        handle = where.register_forward_hook(lambda m, i, o: at_ref.setdefault("a", o))
        model(torch.from_numpy(reference).double())
        handle.remove()
        handle = where.register_forward_hook(lambda m, i, o: at_ref["a"])
        ends = model(xt)[torch.arange(len(x)), tt].numpy()
        handle.remove()
    np.testing.assert_allclose([e["f_baseline"] for e in result.extras], ends, atol=1e-4)
    assert np.abs([e["delta"] for e in result.extras]).max() < 1e-2 * np.abs(ends).max() + 1e-3


@pytest.mark.parametrize("net,layer,module,neuron", [
    ("conv", "/relu_a/Relu", "relu_a", (3, 1, 7)), ("conv", "/relu_b/Relu", "relu_b", (3, 2, 10)),
    ("mlp", "/layers/layers.3/Relu", 3, (5,))], indirect=["net"])
def test_neuron_gradient_and_integrated_gradients(net, layer, module, neuron):
    explainer, model, x, xt, targets, tt = inputs(net)
    where = module_of(model, module)
    text = ",".join(map(str, neuron))
    grad = explainer.attribute(x, "gradient", None, layer=layer, neuron=text)
    reference = NeuronGradient(model, where).attribute(xt, neuron)
    assert np.abs(reference.numpy()).reshape(len(x), -1).max(axis=1).min() > 0  # alive in all
    agree(f"NeuronGradient {layer} {neuron}", grad.maps, reference)
    assert list(grad.targets) == list(targets)  # the prediction is still the model's
    with torch.no_grad():
        activation = {}
        handle = where.register_forward_hook(lambda m, i, o: activation.setdefault("a", o))
        model(xt)
        handle.remove()
    values = activation["a"][(slice(None), *neuron)].numpy()
    assert [e["neuron"] for e in grad.extras] == [list(neuron)] * len(x)
    np.testing.assert_allclose([e["neuron_value"] for e in grad.extras], values, atol=1e-5)
    times = explainer.attribute(x, "input-x-gradient", targets, layer=layer, neuron=neuron)
    agree(f"input x NeuronGradient {layer} {neuron}", times.maps, xt * reference)
    ig = explainer.attribute(x, "integrated-gradients", targets, layer=layer,
                             neuron=neuron, steps=20)
    agree(f"NeuronIntegratedGradients {layer} {neuron}", ig.maps,
          NeuronIntegratedGradients(model, where).attribute(xt, neuron, n_steps=20))
    np.testing.assert_allclose([e["f_x"] for e in ig.extras], values, atol=1e-5)
    conductance = explainer.attribute(x, "conductance", targets, layer=layer, neuron=neuron,
                                      steps=10, rule="riemann-trapezoid", internal_batch_size=7)
    agree(f"NeuronConductance {layer} {neuron}", conductance.maps, NeuronConductance(
        model, where).attribute(xt, neuron, target=tt, n_steps=10, method="riemann_trapezoid"))


def test_layer_maps_have_the_layer_shape_and_name_it(conv):
    explainer, _, x, _, targets, _ = inputs(conv)
    for method in ("gradient", "input-x-gradient", "integrated-gradients", "conductance",
                   "internal-influence"):
        result = explainer.attribute(x, method, targets, layer="/relu_b/Relu", steps=4)
        assert result.maps.shape == (2, 8, 12, 12), method
        assert result.wrt == "/relu_b/Relu_output_0", method  # the record's `wrt`
        assert all(e["layer"] == "/relu_b/Relu_output_0" and e["layer_shape"] == [8, 12, 12]
                   and "wrt" not in e for e in result.extras), method
    neuron = explainer.attribute(x, "gradient", targets, layer="/relu_b/Relu", neuron="1,6,6")
    assert neuron.maps.shape == x.shape and neuron.wrt is None


def test_layer_defaults_and_refusals(conv, mlp):
    explainer, _, x, _, targets, _ = inputs(conv)
    auto = explainer.attribute(x, "conductance", targets, steps=4)  # Grad-CAM's layer
    assert auto.extras[0]["layer"] == explainer.attribute(x, "gradcam", targets).extras[0][
        "layer"]
    refusals = [({"neuron": "1,2,3"}, "--layer"),
                ({"layer": "nowhere"}, "neither a tensor nor a node"),
                ({"layer": "/relu_b/Relu", "neuron": "1,2"}, "3 dims"),
                ({"layer": "/relu_b/Relu", "neuron": "8,0,0"}, "out of range"),
                ({"layer": "/relu_b/Relu", "neuron": "a,b,c"}, "comma-separated")]
    for options, message in refusals:
        with pytest.raises(UsageError, match=message):
            explainer.attribute(x, "gradient", targets, **options)
    table, _, rows, _, classes, _ = inputs(mlp)
    with pytest.raises(UsageError, match="--layer"):  # no 4-D map to default to
        table.attribute(rows, "internal-influence", classes)


@pytest.mark.parametrize("method,options", [
    ("gradient", {"layer": "relu"}), ("input-x-gradient", {"layer": "relu"}),
    ("integrated-gradients", {"layer": "relu"}), ("conductance", {"layer": "relu"}),
    ("internal-influence", {"layer": "relu"}), ("gradient", {"layer": "r", "neuron": "2,5,5"}),
    ("integrated-gradients", {"layer": "relu", "neuron": "2,5,5"}),
    ("conductance", {"layer": "relu", "neuron": "2,5,5"})])
def test_fixed_batch_models_are_padded(tmp_path, method, options):
    """A model exported without a dynamic batch takes one row per run: the rows and the
    layer values fed with them are padded, and the maps are the dynamic model's."""
    x = np.random.default_rng(3).standard_normal((2, 3, 16, 16)).astype(np.float32)
    fixed = Explainer(conv_net(tmp_path / "fixed.onnx", batch=1))
    dynamic = Explainer(conv_net(tmp_path / "dynamic.onnx"))
    options = {**options, "steps": 6, "internal_batch_size": 5}  # each takes what it knows
    ours = fixed.attribute(x, method, 1, **options)
    assert ours.maps.shape == (x.shape if "neuron" in options else (2, 6, 16, 16))
    np.testing.assert_allclose(ours.maps, dynamic.attribute(x, method, 1, **options).maps,
                               rtol=1e-4, atol=1e-5)


def test_cli_image_layer_maps(capsys, tmp_path):
    model, photo = ROOT / "models" / "efficientnet_lite0.onnx", ROOT / "models" / "photos" / \
        "chelsea.jpg"
    layer = "/_blocks.15/_swish_1/Clip"
    code, lines, err = run_cli(capsys, model, photo, "-m", "gradient,conductance",
                               "--layer", layer, "--steps", "2", "-o", tmp_path)
    assert code == 0, err
    for line in lines:
        assert line["error"] is None and line["wrt"] == f"{layer}_output_0"
        assert line["extras"]["layer_shape"] == [1152, 7, 7]
        saved = np.load(line["outputs"]["npy"])
        assert saved.shape == (1152, 7, 7) and np.abs(saved).max() > 0
        assert Image.open(line["outputs"]["png"]).size == (224, 224)  # upsampled to the photo


def test_cli_table_layer_units(capsys, tmp_path):
    model, rows = EXAMPLES / "churn.onnx", EXAMPLES / "customers.csv"
    code, lines, err = run_cli(capsys, model, rows, "-m", "conductance,input-x-gradient",
                               "--layer", "/layers/layers.1/Relu", "-o", tmp_path)
    assert code == 0, err
    assert len(lines) == 10
    for line in lines:
        assert line["error"] is None and "features" not in line
        assert [u["unit"] for u in line["units"]] == list(range(16))
        assert np.load(line["outputs"]["npy"]).shape == (16,)
        assert Path(line["outputs"]["png"]).is_file()
    conductance = [line for line in lines if line["method"] == "conductance"]
    for line in conductance:  # all paths pass through the layer: complete up to quadrature
        extras = line["extras"]
        assert abs(extras["delta"]) < 0.05 * abs(extras["f_x"] - extras["f_baseline"])


def test_cli_text_layer(capsys, tmp_path):
    model, reviews = EXAMPLES / "sentiment.onnx", EXAMPLES / "reviews.txt"
    tokenizer = EXAMPLES / "tokenizer.json"
    code, lines, err = run_cli(capsys, model, reviews, "--tokenizer", tokenizer, "-m",
                               "conductance,integrated-gradients", "--layer",
                               "/norm1/LayerNormalization", "--steps", "8", "-o", tmp_path)
    assert code == 0, err
    for line in lines:  # a T x D layer: one score per token
        assert line["error"] is None and line["wrt"] == "/norm1/LayerNormalization_output_0"
        assert len(line["tokens"]) == line["extras"]["layer_shape"][0]
        assert max(abs(t["score"]) for t in line["tokens"]) > 0
    code, lines, err = run_cli(capsys, model, reviews, "--tokenizer", tokenizer, "-m",
                               "gradient", "--layer", "/Tanh")
    assert code == 0, err
    assert all(len(line["units"]) == 16 and "tokens" not in line for line in lines)
    # The embedding lookup's node names the attributed tensor itself: layer IG there is IG.
    runs = [run_cli(capsys, model, reviews, "--tokenizer", tokenizer, "-m",
                    "integrated-gradients", "--steps", "8", *layer)
            for layer in ([], ["--layer", "/word/Gather"])]
    for plain, at_layer in zip(runs[0][1], runs[1][1], strict=True):
        np.testing.assert_allclose([t["score"] for t in at_layer["tokens"]],
                                   [t["score"] for t in plain["tokens"]], rtol=1e-4, atol=1e-6)


def test_cli_neurons(capsys, tmp_path):
    """--neuron through `onnxpath attribute` on the shipped image, table and text models: the
    maps have the input's shape, the record names the neuron and its value."""
    image = (ROOT / "models" / "efficientnet_lite0.onnx", ROOT / "models" / "photos" /
             "chelsea.jpg", "/_swish_1/Clip", "3,2,2", (3, 224, 224))
    table = (EXAMPLES / "churn.onnx", EXAMPLES / "customers.csv", "/layers/layers.1/Relu", "4",
             (6,))
    for model, data, layer, neuron, shape in (image, table):
        out = tmp_path / model.stem
        code, lines, err = run_cli(capsys, model, data, "-m",
                                   "gradient,input-x-gradient,integrated-gradients,conductance",
                                   "--layer", layer, "--neuron", neuron, "--steps", "2", "-o", out)
        assert code == 0, err
        for line in lines:
            assert line["error"] is None and line["wrt"] is None, line["method"]
            assert line["extras"]["neuron"] == [int(i) for i in neuron.split(",")]
            assert line["extras"]["layer"] == f"{layer}_output_0"
            saved = np.load(line["outputs"]["npy"])
            assert saved.shape == shape, line["method"]
            if line["extras"]["neuron_value"] > 0:  # ReLU units: a dead one has no gradient
                assert np.abs(saved).max() > 0, line["method"]
        assert any(line["extras"]["neuron_value"] > 0 for line in lines)
    code, lines, err = run_cli(capsys, EXAMPLES / "sentiment.onnx", EXAMPLES / "reviews.txt",
                               "--tokenizer", EXAMPLES / "tokenizer.json", "-m", "gradient",
                               "--layer", "/Tanh", "--neuron", "3")
    assert code == 0, err
    assert all(line["extras"]["neuron"] == [3] and line["tokens"] for line in lines)
    code, lines, err = run_cli(capsys, table[0], table[1], "-m", "gradient", "--neuron", "4")
    assert code == 2 and not lines and "--layer" in err


def test_captum_layer_and_neuron_names(conv):
    """Captum's class names reach the methods (the layer and neuron come from the options)."""
    for alias, name in [("LayerConductance", "conductance"), ("InternalInfluence",
                        "internal-influence"), ("LayerGradientXActivation", "input-x-gradient"),
                        ("LayerIntegratedGradients", "integrated-gradients"),
                        ("NeuronGradient", "gradient"),
                        ("NeuronIntegratedGradients", "integrated-gradients")]:
        assert resolve_method(alias) == name
    explainer, _, x, _, targets, _ = inputs(conv)
    result = explainer.attribute(x, "LayerGradientXActivation", targets, layer="/relu_a/Relu")
    assert result.method == "input-x-gradient" and result.maps.shape == (2, 8, 12, 12)
    result = explainer.attribute(x, "NeuronGradient", targets, layer="/relu_a/Relu",
                                 neuron="3,1,7")
    assert result.method == "gradient" and result.extras[0]["neuron"] == [3, 1, 7]
