"""DeepLIFT (rescale rule) and DeepLiftShap against Captum, conservation on the shipped
EfficientNet-Lite0, and both methods from the CLI on the image, table and text models.

Captum runs a float64 copy of each torch network (multiply_by_inputs=True, the same baselines);
onnxpath runs the exported float32 ONNX file. Each module is used once, as Captum's hooks need.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from captum.attr import DeepLift, DeepLiftShap
from captum.attr._core import deep_lift
from torch import nn

from onnxpath.cli import main
from onnxpath.explainer import Explainer
from onnxpath.io.image import load_input
from onnxpath.io.preprocess import preset_for
from onnxpath.methods import resolve_method

MODELS = Path(__file__).resolve().parents[2] / "models"
EXAMPLES = MODELS / "examples"


class ConvNet(nn.Module):
    """ReLU, MaxPool, a residual Add, Tanh and Sigmoid, BatchNorm, global average pooling.

    The MaxPool sits between convolutions: Captum skips its own maxpool rule when a hooked
    activation is next to the MaxPool (Conv, MaxPool, ReLU or ReLU, MaxPool: Captum's
    convergence delta then reaches 5-100% of f(x) − f(x'), onnxpath's stays below 1e-5)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 8, 1), nn.MaxPool2d(2))
        self.conv1, self.act1 = nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
        self.conv2, self.act2 = nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
        self.head, self.tanh = nn.Conv2d(8, 8, 1), nn.Tanh()
        self.fc1, self.sigmoid, self.fc2 = nn.Linear(8, 16), nn.Sigmoid(), nn.Linear(16, 10)
        with torch.no_grad():  # logits that move with the input
            self.fc1.weight.mul_(8.0)
            self.fc2.weight.mul_(4.0)

    def forward(self, x):
        s = self.stem(x)
        r = self.act2(self.conv2(self.act1(self.conv1(s))) + s)
        h = self.tanh(self.head(r)).mean(dim=(2, 3))
        return self.fc2(self.sigmoid(self.fc1(h)))


class MLP(nn.Module):
    """A table model: ReLU, Tanh, ELU and Softplus between linear layers."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(),
                                    nn.Linear(16, 16), nn.ELU(), nn.Linear(16, 16),
                                    nn.Softplus(), nn.Linear(16, 3))

    def forward(self, x):
        return self.layers(x)


class HardNet(nn.Module):
    """LeakyReLU (Captum rescales it), Hardswish and Hardsigmoid (single ONNX ops that
    onnxpath rescales; Captum's own rule is registered for them in the test)."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(6, 16), nn.LeakyReLU(0.1), nn.Linear(16, 16),
                                    nn.Hardswish(), nn.Linear(16, 16), nn.Hardsigmoid(),
                                    nn.Linear(16, 3))
        with torch.no_grad():
            self.layers[2].weight.mul_(4.0)

    def forward(self, x):
        return self.layers(x)


class ReLU6Net(nn.Module):
    """ReLU6 units that saturate: a first conv scaled up, so that many pass 6."""

    def __init__(self):
        super().__init__()
        self.conv, self.act = nn.Conv2d(3, 8, 3, padding=1), nn.ReLU6()
        self.fc1, self.act2, self.fc2 = nn.Linear(8, 16), nn.ReLU6(), nn.Linear(16, 5)
        with torch.no_grad():
            self.conv.weight.mul_(8.0)
            self.fc1.weight.mul_(6.0)

    def forward(self, x):
        return self.fc2(self.act2(self.fc1(self.act(self.conv(x)).mean(dim=(2, 3)))))


class SiLUNet(nn.Module):
    """SiLU, h * sigmoid(h): Mul(h, Sigmoid(h)) in ONNX, a product of two activations. The
    Sigmoid is a module of its own, so that Captum rescales it as onnxpath does."""

    def __init__(self):
        super().__init__()
        self.fc1, self.sigmoid, self.fc2 = nn.Linear(6, 8), nn.Sigmoid(), nn.Linear(8, 3)

    def forward(self, x):
        h = self.fc1(x)
        return self.fc2(h * self.sigmoid(h))


def pair(cls, shape, tmp_path, dynamic=True):
    torch.manual_seed(0)
    model = cls().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / f"{cls.__name__}{'' if dynamic else '_fixed'}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, *shape),), str(path), dynamo=False,
                          opset_version=17, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}
                          if dynamic else None)
    return Explainer(path), copy.deepcopy(model).double()


def agree(name: str, ours: np.ndarray, theirs: torch.Tensor, pearson_min=0.9999,
          rel_max=1e-4) -> None:
    ref = theirs.detach().numpy().astype(np.float64)
    ours = np.asarray(ours, dtype=np.float64)
    assert ours.shape == ref.shape
    pearson = np.corrcoef(ours.ravel(), ref.ravel())[0, 1]
    rel_l2 = np.linalg.norm(ours - ref) / np.linalg.norm(ref)
    print(f"\n[oracle] {name:40s} pearson={pearson:.8f} rel_l2={rel_l2:.2e}")
    assert pearson >= pearson_min, f"{name}: Pearson {pearson}"
    assert rel_l2 <= rel_max, f"{name}: relative L2 {rel_l2}"


def relative_gap(extras) -> float:
    """The largest |sum(A) − (f(x) − f(x'))| / |f(x) − f(x')| of a batch."""
    return max(abs(e["delta"]) / abs(e["f_x"] - e["f_baseline"]) for e in extras)


def closes(extras, tolerance=1e-4) -> bool:
    """Summation-to-delta up to `tolerance` of f(x) − f(x') and float32's rounding of the
    logits themselves."""
    return all(abs(e["delta"]) <= tolerance * abs(e["f_x"] - e["f_baseline"])
               + 1e-6 * max(abs(e["f_x"]), abs(e["f_baseline"])) for e in extras)


def inputs(shape, rows=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rows, *shape)).astype(np.float32)


def captum_deeplift(model, x, reference, targets):
    return DeepLift(model, multiply_by_inputs=True).attribute(
        torch.from_numpy(x).double(), torch.from_numpy(reference).double(),
        target=torch.from_numpy(targets), return_convergence_delta=True)


@pytest.mark.parametrize("cls,shape", [(ConvNet, (3, 16, 16)), (MLP, (6,))])
def test_deeplift_matches_captum(tmp_path, cls, shape):
    explainer, model = pair(cls, shape, tmp_path)
    x = inputs(shape)
    for name, reference in [("zero", np.zeros_like(x)), ("random", inputs(shape, seed=1))]:
        targets = explainer.predict(x).argmax(axis=1)
        ours = explainer.attribute(x, "deeplift", targets, baseline=reference)
        theirs, delta = captum_deeplift(model, x, reference, targets)
        agree(f"deeplift {cls.__name__} baseline={name}", ours.maps, theirs)
        # Summation-to-delta: ours closes as tightly as Captum's float64 run.
        scale = max(abs(e["f_x"] - e["f_baseline"]) for e in ours.extras)
        print(f"  |delta| / |f(x) - f(x')|: ours={relative_gap(ours.extras):.1e} "
              f"captum (float64)={delta.abs().max().item() / scale:.1e}")
        assert closes(ours.extras)
        assert ours.extras[0]["deeplift_gradient_fallback"] == []


def test_hard_activations_match_captum_s_rescale_rule(tmp_path, monkeypatch):
    explainer, model = pair(HardNet, (6,), tmp_path)
    ops = {n.op_type for n in onnx.load(str(explainer.path)).graph.node}
    assert {"LeakyRelu", "HardSwish", "HardSigmoid"} <= ops
    for module in (nn.Hardswish, nn.Hardsigmoid):
        monkeypatch.setitem(deep_lift.SUPPORTED_NON_LINEAR, module, deep_lift.nonlinear)
    x, reference = inputs((6,)), inputs((6,), seed=1)
    targets = explainer.predict(x).argmax(axis=1)
    ours = explainer.attribute(x, "deeplift", targets, baseline=reference)
    theirs, _ = captum_deeplift(model, x, reference, targets)
    agree("deeplift LeakyReLU/Hardswish/Hardsigmoid", ours.maps, theirs)
    assert closes(ours.extras)


def test_deeplift_shap_matches_captum(tmp_path):
    shape = (3, 16, 16)
    explainer, model = pair(ConvNet, shape, tmp_path)
    x, background = inputs(shape, rows=2), inputs(shape, rows=4, seed=2)
    targets = explainer.predict(x).argmax(axis=1)
    ours = explainer.attribute(x, "DeepLiftShap", targets, baseline=background,
                               internal_batch_size=3)
    theirs = DeepLiftShap(model, multiply_by_inputs=True).attribute(
        torch.from_numpy(x).double(), torch.from_numpy(background).double(),
        target=torch.from_numpy(targets))
    agree("deeplift-shap ConvNet K=4", ours.maps, theirs)
    assert ours.method == "deeplift-shap" and ours.extras[0]["baselines"] == 4
    assert closes(ours.extras)


def test_relu6_gets_the_rescale_rule(tmp_path, monkeypatch):
    """Captum gives nn.ReLU6 the plain gradient, which breaks summation-to-delta where units
    saturate. onnxpath applies the rescale rule to it (Clip), as to any elementwise
    nonlinearity: the oracle is Captum's own rule registered for nn.ReLU6, and the sum of the
    attributions closes on f(x) − f(x')."""
    shape = (3, 8, 8)
    explainer, model = pair(ReLU6Net, shape, tmp_path)
    x, reference = inputs(shape), inputs(shape, seed=1)
    targets = explainer.predict(x).argmax(axis=1)
    ours = explainer.attribute(x, "deeplift", targets, baseline=reference)
    _, stock_delta = captum_deeplift(model, x, reference, targets)
    monkeypatch.setitem(deep_lift.SUPPORTED_NON_LINEAR, nn.ReLU6, deep_lift.nonlinear)
    theirs, delta = captum_deeplift(model, x, reference, targets)
    agree("deeplift ReLU6 (rescale)", ours.maps, theirs)
    scale = max(abs(e["f_x"] - e["f_baseline"]) for e in ours.extras)
    print(f"  |delta|/scale: ours={relative_gap(ours.extras):.1e} captum rescale="
          f"{delta.abs().max().item() / scale:.1e} captum stock (gradient)="
          f"{stock_delta.abs().max().item() / scale:.1e}")
    assert closes(ours.extras)
    assert stock_delta.abs().max().item() > 1e-2 * scale  # the gradient rule would not close


def test_products_of_activations_split_their_change(tmp_path):
    """The closed form is the oracle: with h = W1 x + b1, the Sigmoid's multiplier
    m = (σ(h) − σ(h')) / (h − h') and the product's Shapley split, d/dh = g (σ̄ + h̄ m), bars
    the midpoints. The sum closes. (Captum gives a product its gradient, and drops the branch
    g σ(h) here: its backward hook on nn.Sigmoid replaces the gradient of its input, which the
    product reads too.)"""
    explainer, model = pair(SiLUNet, (6,), tmp_path)
    x = inputs((6,))
    result = explainer.attribute(x, "deeplift")
    assert result.extras[0]["deeplift_gradient_fallback"] == []
    w1, b1 = (p.detach().numpy() for p in (model.fc1.weight, model.fc1.bias))
    g = model.fc2.weight.detach().numpy()[result.targets]
    h, h_ref = x.astype(np.float64) @ w1.T + b1, b1[None]
    s, s_ref = 1 / (1 + np.exp(-h)), 1 / (1 + np.exp(-h_ref))
    slope = (s - s_ref) / (h - h_ref)
    multipliers = (g * ((s + s_ref) / 2 + (h + h_ref) / 2 * slope)) @ w1
    agree("deeplift SiLU (closed form)", result.maps, torch.from_numpy(x * multipliers))
    assert closes(result.extras)


class QuotientNet(nn.Module):
    """a / (1 + σ(c)), both computed from the input: a Div whose divisor varies."""

    def __init__(self):
        super().__init__()
        self.a, self.c, self.sigmoid = nn.Linear(6, 8), nn.Linear(6, 8), nn.Sigmoid()
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        return self.out(self.a(x) / (1 + self.sigmoid(self.c(x))))


class NormNet(nn.Module):
    """LayerNorm (a learned scale and bias) and Softmax over the features."""

    def __init__(self):
        super().__init__()
        self.fc1, self.norm, self.fc2 = nn.Linear(6, 8), nn.LayerNorm(8), nn.Linear(8, 3)
        with torch.no_grad():
            self.norm.weight.uniform_(0.5, 1.5)
            self.norm.bias.uniform_(-0.5, 0.5)

    def forward(self, x):
        return self.fc2(torch.softmax(2 * self.norm(self.fc1(x)), dim=-1))


class MaxNormNet(nn.Module):
    """h − max(h): a ReduceMax, which has no DeepLIFT rule."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = self.fc1(x)
        return self.fc2(torch.tanh(h - h.amax(dim=-1, keepdim=True)))


class PairNet(nn.Module):
    """Max of two varying tensors, Min and Pow with a constant, a Div whose numerator is
    constant: elementwise ops of two operands."""

    def __init__(self):
        super().__init__()
        self.a, self.c, self.out = nn.Linear(6, 8), nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, x):
        a, c = self.a(x), self.c(x)
        limit = torch.full((8,), 0.5)
        return self.out(torch.maximum(a, c) + torch.minimum(a, limit) + limit / (1 + c ** 2))


@pytest.mark.parametrize("cls,ops", [(QuotientNet, {"Div"}),
                                     (PairNet, {"Max", "Min", "Pow", "Div"})])
def test_elementwise_pairs_conserve(tmp_path, cls, ops):
    explainer, _ = pair(cls, (6,), tmp_path)
    assert ops <= {n.op_type for n in onnx.load(str(explainer.path)).graph.node}
    x, reference = inputs((6,)), inputs((6,), seed=1)
    result = explainer.attribute(x, "deeplift", baseline=reference)
    print(f"\n[{cls.__name__}] relative gap {relative_gap(result.extras):.1e}")
    assert closes(result.extras) and result.extras[0]["deeplift_gradient_fallback"] == []


def decomposed_deeplift(model: NormNet, x: np.ndarray, x_ref: np.ndarray,
                        targets: np.ndarray) -> np.ndarray:
    """The oracle for LayerNorm and Softmax, in float64 numpy: DeepLIFT through their
    decomposition (rescale for exp and sqrt, Shapley shares for the quotients, u + u' for the
    square, the linear steps' own adjoints)."""
    w1, b1, gamma, beta, w2 = (p.detach().numpy() for p in (
        model.fc1.weight, model.fc1.bias, model.norm.weight, model.norm.bias, model.fc2.weight))

    def forward(t):
        z = t @ w1.T + b1
        u = z - z.mean(-1, keepdims=True)
        v = (u * u).mean(-1, keepdims=True)
        sigma = np.sqrt(v + model.norm.eps)
        return u, v, sigma, 2 * (u / sigma * gamma + beta)

    def quotient(a, a_ref, c, c_ref):
        return (0.5 * (a / c - a_ref / c + a / c_ref - a_ref / c_ref),
                0.5 * (a / c - a / c_ref + a_ref / c - a_ref / c_ref))

    u, v, sigma, n = forward(x.astype(np.float64))
    u_ref, v_ref, sigma_ref, n_ref = forward(x_ref.astype(np.float64))
    shift = np.maximum(n.max(-1, keepdims=True), n_ref.max(-1, keepdims=True))
    e, e_ref = np.exp(n - shift), np.exp(n_ref - shift)
    total, total_ref = e.sum(-1, keepdims=True), e_ref.sum(-1, keepdims=True)
    g_p = w2[targets]
    share_e, share_total = quotient(e, e_ref, total, total_ref)
    g_e = g_p * share_e / (e - e_ref) + (g_p * share_total).sum(-1, keepdims=True) / (
        total - total_ref)
    g_r = g_e * (e - e_ref) / (n - n_ref) * 2 * gamma
    share_u, share_sigma = quotient(u, u_ref, sigma, sigma_ref)
    g_sigma = (g_r * share_sigma).sum(-1, keepdims=True) / (sigma - sigma_ref)
    g_v = g_sigma * (sigma - sigma_ref) / (v - v_ref)
    g_u = g_r * share_u / (u - u_ref) + g_v * (u + u_ref) / u.shape[-1]
    g_z = g_u - g_u.mean(-1, keepdims=True)
    return (x - x_ref) * (g_z @ w1)


def test_layer_norm_and_softmax_follow_their_decomposition(tmp_path):
    explainer, model = pair(NormNet, (6,), tmp_path)
    ops = {n.op_type for n in onnx.load(str(explainer.path)).graph.node}
    assert {"LayerNormalization", "Softmax"} <= ops
    x, reference = inputs((6,)), inputs((6,), seed=1)
    result = explainer.attribute(x, "deeplift", baseline=reference)
    oracle = decomposed_deeplift(model, x, reference, result.targets)
    agree("deeplift LayerNorm+Softmax (decomposed)", result.maps, torch.from_numpy(oracle))
    print(f"  relative gap {relative_gap(result.extras):.1e}")
    assert closes(result.extras) and result.extras[0]["deeplift_gradient_fallback"] == []


def test_ops_without_a_rule_keep_their_gradient_and_are_named(tmp_path):
    explainer, _ = pair(MaxNormNet, (6,), tmp_path)
    x, reference = inputs((6,)), inputs((6,), seed=1)
    result = explainer.attribute(x, "deeplift", baseline=reference)
    named = result.extras[0]["deeplift_gradient_fallback"]
    assert [n.split()[0] for n in named] == ["ReduceMax"]
    print(f"\n[ReduceMax] relative gap {relative_gap(result.extras):.1e} with {named}")
    assert not closes(result.extras)  # the gradient stands in: no conservation


class OverlapPoolNet(nn.Module):
    """Overlapping, padded MaxPool windows (3, stride 2) and a global max pool: each input
    position may be the argmax of several windows."""

    def __init__(self):
        super().__init__()
        self.conv1, self.pool = nn.Conv2d(3, 8, 3, padding=1), nn.MaxPool2d(3, 2, padding=1)
        self.act, self.conv2 = nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1)
        self.top, self.fc = nn.AdaptiveMaxPool2d(1), nn.Linear(8, 5)

    def forward(self, x):
        h = self.conv2(self.act(self.pool(self.conv1(x))))
        return self.fc(torch.flatten(self.top(h), 1))


def test_overlapping_max_pools_conserve(tmp_path):
    """Captum's maxpool rule, with the shares of overlapping windows added up (Captum's
    max_unpool would keep one of them), closes on f(x) − f(x')."""
    exported, _ = pair(OverlapPoolNet, (3, 12, 12), tmp_path)
    model = onnx.load(str(exported.path))
    last = [n for n in model.graph.node if n.op_type == "MaxPool"][-1]  # torch's adaptive pool
    last.op_type = "GlobalMaxPool"
    del last.attribute[:]
    onnx.save(model, str(tmp_path / "global.onnx"))
    explainer = Explainer(tmp_path / "global.onnx")
    x, reference = inputs((3, 12, 12)), inputs((3, 12, 12), seed=1)
    result = explainer.attribute(x, "deeplift", baseline=reference)
    print(f"\n[max pools] relative gap {relative_gap(result.extras):.1e}")
    assert closes(result.extras) and result.extras[0]["deeplift_gradient_fallback"] == []
    gradient = explainer.attribute(x, "input-x-gradient").maps  # not a rescaled map
    assert not np.allclose(gradient, result.maps, atol=1e-3)


def test_a_fixed_batch_model_gives_the_same_maps(tmp_path):
    shape = (6,)
    dynamic, _ = pair(MLP, shape, tmp_path)
    fixed, _ = pair(MLP, shape, tmp_path, dynamic=False)
    assert onnx.load(str(fixed.path)).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    x = inputs(shape)
    for method in ("deeplift", "deeplift-shap"):
        a = dynamic.attribute(x, method, samples=3).maps
        b = fixed.attribute(x, method, samples=3).maps
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_aliases():
    assert resolve_method("DeepLift") == resolve_method("deep-lift") == "deeplift"
    assert resolve_method("DeepLiftShap") == resolve_method("deep_lift_shap") == "deeplift-shap"
    assert resolve_method("DeepExplainer") == resolve_method("deep-shap") == "deeplift-shap"


def test_efficientnet_lite0_conserves():
    """The shipped deployed model, no torch source: ReLU6 (Clip), convs, BatchNorm folded,
    global pooling. Its DeepLIFT maps sum to f(x) − f(x') within 1% (measured: ~1e-8)."""
    path = MODELS / "efficientnet_lite0.onnx"
    explainer = Explainer(path, threads=2)
    prep = preset_for(explainer.input_shape, onnx.load(str(path), load_external_data=False))
    x = load_input(MODELS / "photos" / "baboon.jpg", explainer.input_shape, prep)[0][None]
    for baseline in ("zero", "blur"):
        result = explainer.attribute(x, "deeplift", baseline=baseline)
        extra = result.extras[0]
        gap = relative_gap(result.extras)
        print(f"\n[lite0] deeplift baseline={baseline}: sum={result.maps.sum():.5f} "
              f"f(x)-f(x')={extra['f_x'] - extra['f_baseline']:.5f} relative gap={gap:.1e}")
        assert gap < 0.01
        assert extra["deeplift_gradient_fallback"] == []


def run_cli(capsys, *args):
    code = main(["attribute", *map(str, args), "--no-cache", "-q"])
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines() if line.strip()]
    return code, lines, captured.err


def test_cli_on_the_shipped_photo(capsys, tmp_path):
    code, lines, err = run_cli(capsys, MODELS / "efficientnet_lite0.onnx",
                               MODELS / "photos" / "baboon.jpg", "-m", "deeplift,deeplift-shap",
                               "--samples", "2", "--out", tmp_path)
    assert code == 0, err
    assert [line["method"] for line in lines] == ["deeplift", "deeplift-shap"]
    for line in lines:
        assert line["label"] == "baboon"
        assert Path(line["outputs"]["npy"]).is_file() and Path(line["outputs"]["png"]).is_file()
        assert relative_gap([line["extras"]]) < 0.01
    assert lines[1]["extras"]["baselines"] == 2 and lines[1]["params"]["samples"] == 2


def test_cli_on_the_table_model(capsys, tmp_path):
    code, lines, err = run_cli(capsys, EXAMPLES / "churn.onnx", EXAMPLES / "customers.csv",
                               "-m", "deeplift,deeplift-shap", "--samples", "3", "--out",
                               tmp_path)
    assert code == 0, err
    assert {line["method"] for line in lines} == {"deeplift", "deeplift-shap"}
    for line in lines:
        assert [f["name"] for f in line["features"]][:2] == ["age", "tenure_months"]
        assert closes([line["extras"]])  # Gemm and Relu only: DeepLIFT closes
    # The background a table wants: rows of real customers, each a baseline.
    code, lines, err = run_cli(capsys, EXAMPLES / "churn.onnx", EXAMPLES / "customers.csv",
                               "-m", "DeepLiftShap", "--baseline", EXAMPLES / "customers.npy")
    assert code == 0, err
    assert all(line["extras"]["baselines"] == 5 and closes([line["extras"]]) for line in lines)
    logits = np.array([[c["logit"] for c in sorted(line["top"], key=lambda c: c["class"])]
                       for line in lines])  # the background rows are the inputs themselves
    for line in lines:  # f_baseline: the target's logit averaged over the background
        assert line["extras"]["f_baseline"] == pytest.approx(
            logits[:, line["target"]].mean(), rel=1e-5)


def test_cli_on_the_text_model(capsys, tmp_path):
    """Attributed at the embedding output, the pad token's embedding as the baseline. Every op
    of the BERT-like model has a rule (attention's products and Softmax, GELU, LayerNorm), so
    the contributions sum to f(x) − f(x')."""
    code, lines, err = run_cli(capsys, EXAMPLES / "sentiment.onnx", EXAMPLES / "reviews.txt",
                               "--tokenizer", EXAMPLES / "tokenizer.json", "-m",
                               "deeplift,deeplift-shap", "--out", tmp_path)
    assert code == 0, err
    assert len(lines) == 10
    for line in lines:
        assert line["wrt"] and line["tokens"]
        assert line["extras"]["deeplift_gradient_fallback"] == []
        assert closes([line["extras"]])  # measured: 1.5e-6 of f(x) − f(x')
    shap = [line for line in lines if line["method"] == "deeplift-shap"]
    assert all(line["extras"]["baselines"] == 1 for line in shap)  # the pad embedding alone
