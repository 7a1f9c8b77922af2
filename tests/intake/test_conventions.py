"""Every input and output convention (issue #23 items 5 and 6), each end to end through the CLI
(`onnxpath attribute`) and the API against a float64 reference (torch float64 or an analytic
one): fixed batch dims N > 1 on every path, inputs with no batch dim, float64 models in
float64, an `--output` named as it is (and the record naming the tensor differentiated),
non-finite values noted and never silent, old opsets upgraded without changing the function.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from captum.attr import IntegratedGradients
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from onnxpath import Explainer
from onnxpath.cli import main
from onnxpath.errors import ModelError
from onnxpath.explainer import NonFiniteWarning
from onnxpath.intake.model import normalise
from tests.oracle import export, relative_error, torch_gradient

F32 = 1e-5  # float32 maps against float64 on these tiny models (2x float32's own error: 1e-6)
F64 = 1e-12  # float64 maps against float64


def cli(capsys, *args) -> tuple[int, list[dict], str]:
    code = main([*map(str, args)])
    out = capsys.readouterr()
    return code, [json.loads(line) for line in out.out.splitlines()
                  if line.startswith("{")], out.err


def show(capsys, text: str) -> None:
    """A figure for `-s`, past the capture the CLI's JSON lines go through."""
    with capsys.disabled():
        print(text)


def save(model: onnx.ModelProto, tmp_path, name: str = "model.onnx"):
    onnx.save(model, str(tmp_path / name))
    return tmp_path / name


class Mlp(nn.Module):
    def __init__(self, features: int = 4, classes: int = 3):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.w1 = nn.Parameter(torch.randn(features, 5, generator=gen))
        self.w2 = nn.Parameter(torch.randn(5, classes, generator=gen))

    def forward(self, x):
        return torch.tanh(x @ self.w1) @ self.w2


def mlp_gradient(x: np.ndarray, target: int) -> np.ndarray:
    seed = np.zeros((len(x), 3))
    seed[:, target] = 1
    return torch_gradient(Mlp(), x, seed)[1]


def example(shape, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# --- fixed batch dims N > 1 ----------------------------------------------------------------

@pytest.mark.parametrize("batch", [2, 3, 4])
def test_a_fixed_batch_runs_every_path(batch, tmp_path, capsys):
    """A model exported with batch N: one example, or more than N, is tiled to N rows; the
    target index, IG's and SmoothGrad's rows and the argmax seed all run."""
    path = save(export(Mlp(), example((batch, 4))), tmp_path)
    assert onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0].dim_value == batch
    xs = example((batch + 1, 4), seed=2)  # more rows than the batch: two chunks
    explainer = Explainer(path, cache=False, target_index=(1,))
    result = explainer.attribute(xs, method="gradient")
    error = relative_error(result.maps, mlp_gradient(xs, 1))
    ig = explainer.attribute(xs, method="integrated-gradients", steps=16)
    reference = Mlp().double()
    captum = IntegratedGradients(reference).attribute(
        torch.tensor(xs, dtype=torch.float64), target=1, n_steps=16,
        method="gausslegendre").numpy()
    ig_error = relative_error(ig.maps, captum)
    smooth = explainer.attribute(xs[:1], method="smoothgrad", samples=3)
    show(capsys, f"batch {batch}: gradient {error:.1e}, integrated gradients {ig_error:.1e}")
    assert error < F32 and ig_error < F32 and np.isfinite(smooth.maps).all()
    default = Explainer(path, cache=False).attribute(xs[:1])  # the argmax, padded
    target = int(torch_gradient(Mlp(), xs[:1], np.zeros((1, 3)))[0].argmax())
    assert default.targets[0] == target
    assert relative_error(default.maps, mlp_gradient(xs[:1], target)) < F32
    np.save(tmp_path / "row.npy", xs[0])
    code, lines, err = cli(capsys, "attribute", path, tmp_path / "row.npy", "--target-index",
                           "1", "-m", "gradient,integrated-gradients", "-o", tmp_path / "out")
    assert code == 0, err
    saved = np.load(lines[0]["outputs"]["npy"])
    assert relative_error(saved[None], mlp_gradient(xs[:1], 1)) < F32


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_a_fixed_batch_runs_the_pathway_check_grad_and_export(exporter, tmp_path, capsys):
    x = example((3, 2, 5, 5))
    path = save(export(ConvNet(), x, exporter=exporter), tmp_path)
    np.save(tmp_path / "image.npy", x[0])
    code, lines, err = cli(capsys, "pathway", path, tmp_path / "image.npy", "--json")
    assert code == 0, err
    code, lines, err = cli(capsys, "attribute", path, tmp_path / "image.npy", "-m",
                           "pathway,gradcam,lrp", "--target-index", "2", "-q")
    assert code == 0 and [r["error"] for r in lines] == [None] * 3, err
    code, _, err = cli(capsys, "check-grad", path, "-i", tmp_path / "image.npy")
    out = capsys.readouterr().out
    assert code == 0, err + out
    code, _, err = cli(capsys, "export", path, "-o", tmp_path / "grad.onnx")
    assert code == 0, err
    seed = np.zeros((1, 3))
    seed[0, 2] = 1
    result = Explainer(path, cache=False).attribute(x[:1], target=2)
    error = relative_error(result.maps, torch_gradient(ConvNet(), x[:1], seed)[1])
    show(capsys, f"fixed batch 3 conv net ({exporter}): gradient {error:.1e}")
    assert error < F32


# --- no batch dim ---------------------------------------------------------------------------

class Unbatched(nn.Module):
    """x (4,) -> (3,): a model with no batch dim at all."""

    def __init__(self):
        super().__init__()
        self.mlp = Mlp()

    def forward(self, x):
        return self.mlp(x[None])[0]


class OverRows(nn.Module):
    """x (3, 4) -> (2,): dim 0 is not a batch, the model sums over it."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 2, generator=torch.Generator().manual_seed(3)))

    def forward(self, x):
        return torch.tanh(x.sum(dim=0) @ self.w)


def batchless_export(module: nn.Module, x: np.ndarray, tmp_path) -> object:
    model = export(module, x)
    assert len(model.graph.input[0].type.tensor_type.shape.dim) == x.ndim
    return save(model, tmp_path)


@pytest.mark.parametrize("module, shape, classes", [(Unbatched, (4,), 3),
                                                     (OverRows, (3, 4), 2)])
def test_an_input_without_a_batch_dim_in_either_spelling(module, shape, classes, tmp_path,
                                                         capsys):
    x = example(shape)
    path = batchless_export(module(), x, tmp_path)
    seed = np.zeros(classes)
    seed[1] = 1
    expected = torch_gradient(module(), x, seed)[1]
    result = Explainer(path, cache=False).attribute(x, target=1)
    assert relative_error(result.maps[0], expected) < F32
    both = Explainer(path, cache=False).attribute(np.stack([x, 2 * x]), target=1)
    assert relative_error(both.maps[1], torch_gradient(module(), 2 * x, seed)[1]) < F32
    np.save(tmp_path / "bare.npy", x)
    np.save(tmp_path / "leading.npy", x[None])
    for name in ("bare", "leading"):
        code, lines, err = cli(capsys, "attribute", path, tmp_path / f"{name}.npy", "-t", "1",
                               "-m", "gradient", "-o", tmp_path / name)
        assert code == 0, err
        error = relative_error(np.load(lines[0]["outputs"]["npy"]), expected)
        show(capsys, f"{module.__name__} {name} {x.shape if name == 'bare' else (1, *x.shape)}: "
              f"{error:.1e}")
        assert error < F32
    code, lines, err = cli(capsys, "attribute", path, tmp_path / "bare.npy", "--target-index",
                           "1", "-m", "integrated-gradients", "-q")
    assert code == 0 and lines[0]["target_index"] == [1], err
    # The pathway masks activations per example: refused in one line, no traceback
    code, lines, err = cli(capsys, "pathway", path, tmp_path / "bare.npy", "--layers", "Tanh")
    assert code != 0 and "has no batch dim" in err and "Traceback" not in err


class MixedRows(nn.Module):
    """x (3, 4) -> (3, 2): dim 0 has the output's size but is no batch (Softmax over it)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 2, generator=torch.Generator().manual_seed(4)))

    def forward(self, x):
        return torch.softmax(x, dim=0) @ self.w


def test_a_first_dim_whose_rows_mix_is_not_a_batch(tmp_path, capsys):
    x = example((3, 4))
    path = batchless_export(MixedRows(), x, tmp_path)
    seed = np.zeros((3, 2))
    seed[2, 1] = 1
    expected = torch_gradient(MixedRows(), x, seed)[1]
    result = Explainer(path, cache=False, target_index=(2, 1)).attribute(x)
    error = relative_error(result.maps[0], expected)
    np.save(tmp_path / "x.npy", x)
    code, lines, err = cli(capsys, "attribute", path, tmp_path / "x.npy", "--target-index",
                           "2,1", "-o", tmp_path / "out")
    assert code == 0, err
    cli_error = relative_error(np.load(lines[0]["outputs"]["npy"]), expected)
    show(capsys, f"rows mixed over dim 0 (3, 4) -> (3, 2): API {error:.1e}, CLI {cli_error:.1e}")
    assert error < F32 and cli_error < F32
    assert result.maps.shape == (1, 3, 4)  # one example: row 2's output depends on every row
    assert np.abs(result.maps[0, :2]).max() > 1e-3


# --- float64 models -------------------------------------------------------------------------

def test_a_float64_model_runs_in_float64(tmp_path, capsys):
    x64 = np.random.default_rng(4).standard_normal((2, 4))
    model = Mlp().double()
    buffer = save(export(model, x64, dynamic_batch=True), tmp_path)
    assert onnx.load(str(buffer)).graph.input[0].type.tensor_type.elem_type == \
        TensorProto.DOUBLE
    explainer = Explainer(buffer, cache=False)
    result = explainer.attribute(x64, target=2)
    assert result.maps.dtype == np.float64
    error = relative_error(result.maps, mlp_gradient(x64, 2))
    default = explainer.attribute(x64)  # the argmax seed, made inside the graph
    ig = explainer.attribute(x64, method="integrated-gradients", target=2, steps=16)
    # IG's Gauss-Legendre sum in float64 (Captum's own step sizes are float32 tensors)
    nodes, weights = np.polynomial.legendre.leggauss(16)
    reference = sum(0.5 * w * mlp_gradient((0.5 * (1 + a)) * x64, 2)
                    for a, w in zip(nodes, weights, strict=True)) * x64
    ig_error = relative_error(ig.maps, reference)
    occlusion = explainer.attribute(x64, method="occlusion", target=2)
    show(capsys, f"float64: gradient {error:.1e}, integrated gradients {ig_error:.1e}")
    assert error < F64 and ig_error < F64 and default.maps.dtype == np.float64
    assert np.isfinite(occlusion.maps).all()
    np.save(tmp_path / "row.npy", x64[0])
    code, lines, err = cli(capsys, "attribute", buffer, tmp_path / "row.npy", "-t", "2",
                           "-o", tmp_path / "out")
    assert code == 0, err
    saved = np.load(lines[0]["outputs"]["npy"])
    cli_error = relative_error(saved[None], mlp_gradient(x64[:1], 2))
    show(capsys, f"float64 through the CLI: {cli_error:.1e} ({saved.dtype})")
    assert cli_error < F64


# --- --output as named ----------------------------------------------------------------------

class WithSoftmax(nn.Module):
    def __init__(self):
        super().__init__()
        self.mlp = Mlp()

    def forward(self, x):
        return torch.softmax(self.mlp(x), dim=1)


def test_a_named_softmax_output_is_differentiated_as_named(tmp_path, capsys):
    x = example((1, 4))
    path = save(export(WithSoftmax(), x, dynamic_batch=True), tmp_path)
    name = onnx.load(str(path)).graph.output[0].name
    seed = np.array([[0.0, 1.0, 0.0]])
    probabilities = torch_gradient(WithSoftmax(), x, seed)[1]
    logits = torch_gradient(Mlp(), x, seed)[1]
    named = Explainer(path, cache=False, output=name).attribute(x, target=1)
    default = Explainer(path, cache=False).attribute(x, target=1)
    error = relative_error(named.maps, probabilities)
    show(capsys, f"--output {name}: d softmax / dx {error:.1e}; default: d logit / dx "
          f"{relative_error(default.maps, logits):.1e}")
    assert error < F32 and relative_error(default.maps, logits) < F32
    assert relative_error(named.maps, logits) > 0.1  # two different functions
    assert named.extras[0]["differentiated"] == name
    assert default.extras[0]["differentiated"] != name
    np.save(tmp_path / "row.npy", x[0])
    code, lines, err = cli(capsys, "attribute", path, tmp_path / "row.npy", "--output", name,
                           "-t", "1", "-o", tmp_path / "out")
    assert code == 0, err
    assert lines[0]["extras"]["differentiated"] == name
    assert relative_error(np.load(lines[0]["outputs"]["npy"])[None], probabilities) < F32


# --- never a silent NaN ---------------------------------------------------------------------

W_NAN = np.random.default_rng(5).standard_normal((4, 2)).astype(np.float32)


def nan_columns() -> onnx.ModelProto:
    """x (N×4) -> [x W (2 columns), log(-|x|) (4 NaN columns)]: NaN outside the columns of
    x W, whose gradients are finite (d log(u) = seed / u is 0 where the seed is)."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["linear"]),
             helper.make_node("Abs", ["x"], ["a"]), helper.make_node("Neg", ["a"], ["n"]),
             helper.make_node("Log", ["n"], ["nan"]),
             helper.make_node("Concat", ["linear", "nan"], ["y"], axis=1)]
    graph = helper.make_graph(nodes, "nan", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["N", 4])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, ["N", 6])], [numpy_helper.from_array(W_NAN, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_nan_outside_the_target_is_noted_not_fatal(tmp_path, capsys):
    path = save(nan_columns(), tmp_path)
    x = example((1, 4))
    with pytest.warns(NonFiniteWarning, match="outside the explained elements"):
        result = Explainer(path, cache=False).attribute(x)
    target = int(np.argmax(x @ W_NAN))  # the largest finite output
    assert result.targets[0] == target and result.extras[0]["non_finite_outputs"] == 4
    assert relative_error(result.maps[0], W_NAN[:, target]) < F32
    np.save(tmp_path / "row.npy", x[0])
    code, lines, err = cli(capsys, "attribute", path, tmp_path / "row.npy", "-t", "1",
                           "-o", tmp_path / "out")
    assert code == 0, err
    record = lines[0]
    assert record["error"] is None and record["extras"]["non_finite_outputs"] == 4
    assert all(np.isfinite(t["logit"]) for t in record["top"])
    assert "NaN or Inf outside the explained elements" in err
    assert relative_error(np.load(record["outputs"]["npy"]), W_NAN[:, 1]) < F32


def sqrt_model() -> onnx.ModelProto:
    """y = sqrt(|x|) W: at x = 0 the output is finite and its gradient is infinite."""
    nodes = [helper.make_node("Abs", ["x"], ["a"]), helper.make_node("Sqrt", ["a"], ["s"]),
             helper.make_node("MatMul", ["s", "w"], ["y"])]
    graph = helper.make_graph(nodes, "sqrt", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["N", 4])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, ["N", 2])], [numpy_helper.from_array(W_NAN, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_non_finite_map_cannot_pass_unnoticed(tmp_path, capsys):
    path = save(sqrt_model(), tmp_path)
    x = np.array([[0.0, 1.0, 2.0, 3.0]], np.float32)
    with pytest.warns(NonFiniteWarning, match="1 of 1 maps hold NaN or Inf"):
        result = Explainer(path, cache=False).attribute(x, target=0)
    assert result.extras[0]["non_finite"] == 1
    np.save(tmp_path / "row.npy", x[0])
    code, lines, err = cli(capsys, "attribute", path, tmp_path / "row.npy", "-t", "0",
                           "-o", tmp_path / "out")
    assert code != 0 and "the attribution holds NaN or Inf" in lines[0]["error"]
    assert lines[0]["extras"]["non_finite"] == 1 and "maps hold NaN or Inf" in err


# --- old opsets -----------------------------------------------------------------------------

RNG = np.random.default_rng(6)
CONV = (RNG.standard_normal((3, 2, 3, 3)) * 0.4).astype(np.float32)
SLOPE = np.array([0.1, 0.5, -0.3], np.float32)
BN = {k: (RNG.random(3) + 0.5).astype(np.float32) for k in ("scale", "bias", "mean", "var")}
BIAS = np.array([0.3, -0.2, 0.1], np.float32)
HEAD = RNG.standard_normal((4, 12)).astype(np.float32)
UP_HEAD = RNG.standard_normal((4, 36)).astype(np.float32)


def legacy_model(opset: int, middle: list, inits: dict) -> onnx.ModelProto:
    """x (1×2×4×4) -> Conv (3 channels) -> `middle` (c -> m) -> Flatten -> Gemm (4)."""
    nodes = [helper.make_node("Conv", ["x", "conv"], ["c"], pads=[1, 1, 1, 1]), *middle,
             helper.make_node("GlobalAveragePool", ["m"], ["pool"]),
             helper.make_node("Flatten", ["pool"], ["flat"]),
             helper.make_node("Gemm", ["flat", "head", "zero"], ["y"], transB=1)]
    graph = helper.make_graph(
        nodes, "legacy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(v, k) for k, v in {"conv": CONV, "head": HEAD[:, :3],
                                                    "zero": np.zeros(4, np.float32),
                                                    **inits}.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 3
    return model


def legacy_reference(kind: str):
    """The same function in torch float64, with each op's meaning at its own opset."""
    conv = torch.tensor(CONV, dtype=torch.float64)
    head = torch.tensor(HEAD[:, :3], dtype=torch.float64)

    def forward(x):
        c = torch.nn.functional.conv2d(x, conv, padding=1)
        if kind == "prelu":  # PRelu-6: one slope per channel
            slope = torch.tensor(SLOPE, dtype=torch.float64).view(1, 3, 1, 1)
            m = torch.where(c > 0, c, slope * c)
        elif kind == "batchnorm":
            t = {k: torch.tensor(v, dtype=torch.float64).view(1, 3, 1, 1)
                 for k, v in BN.items()}
            m = (c - t["mean"]) / torch.sqrt(t["var"] + 1e-5) * t["scale"] + t["bias"]
        else:  # legacy broadcast: the bias aligned at axis 1, then a Relu
            m = torch.relu(c + torch.tensor(BIAS, dtype=torch.float64).view(1, 3, 1, 1))
        return m.mean(dim=(2, 3)) @ head.T
    return forward


LEGACY = {
    "prelu": ([helper.make_node("PRelu", ["c", "slope"], ["m"])], {"slope": SLOPE}),
    "batchnorm": ([helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"],
                                    ["m"], is_test=1, epsilon=1e-5)], BN),
    "broadcast": ([helper.make_node("Add", ["c", "bias"], ["b"], broadcast=1, axis=1),
                   helper.make_node("Relu", ["b"], ["m"])], {"bias": BIAS}),
}


@pytest.mark.parametrize("kind", sorted(LEGACY))
def test_an_opset_6_model_keeps_its_function(kind, tmp_path, capsys):
    middle, inits = LEGACY[kind]
    path = save(legacy_model(6, middle, inits), tmp_path)
    x = example((1, 2, 4, 4))
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y = legacy_reference(kind)(xt)
    y[0, 1].backward()
    result = Explainer(path, cache=False).attribute(x, target=1)
    forward = relative_error(result.class_logits, y.detach().numpy())
    error = relative_error(result.maps, xt.grad.numpy())
    show(capsys, f"opset 6 {kind}: forward {forward:.1e}, gradient {error:.1e}")
    assert forward < F32 and error < F32
    np.save(tmp_path / "image.npy", x[0])
    code, lines, err = cli(capsys, "attribute", path, tmp_path / "image.npy", "-t", "1",
                           "-o", tmp_path / "out")
    assert code == 0, err
    assert relative_error(np.load(lines[0]["outputs"]["npy"])[None], xt.grad.numpy()) < F32


def upsample_model(opset: int, mode: str) -> onnx.ModelProto:
    """x (1×1×3×3) -> Upsample ×2 (scales as an attribute, opsets 7-8) -> Flatten -> Gemm."""
    head = UP_HEAD
    nodes = [helper.make_node("Upsample", ["x"], ["up"], scales=[1.0, 1.0, 2.0, 2.0],
                              mode=mode),
             helper.make_node("Flatten", ["up"], ["flat"]),
             helper.make_node("Gemm", ["flat", "head", "zero"], ["y"], transB=1)]
    graph = helper.make_graph(
        nodes, "upsample", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.ascontiguousarray(head), "head"),
         numpy_helper.from_array(np.zeros(4, np.float32), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 4
    return model


@pytest.mark.parametrize("opset, mode", [(7, "nearest"), (8, "linear")])
def test_an_upsample_model_keeps_its_function(opset, mode, tmp_path):
    """Upsample is linear in x: its matrix A, read column by column from ONNX Runtime running
    the original opset, gives the float64 reference d y_t / dx = head_t A."""
    model = upsample_model(opset, mode)
    path = save(model, tmp_path)
    original = ort.InferenceSession(model.SerializeToString(),
                                    providers=["CPUExecutionProvider"])
    up = onnx.ModelProto()
    up.CopyFrom(model)
    up.graph.output[0].CopyFrom(helper.make_tensor_value_info("up", TensorProto.FLOAT, None))
    del up.graph.node[1:]
    del up.graph.initializer[:]
    session = ort.InferenceSession(up.SerializeToString(), providers=["CPUExecutionProvider"])
    basis = np.eye(9, dtype=np.float32).reshape(9, 1, 1, 3, 3)
    matrix = np.stack([session.run(None, {"x": b})[0].ravel() for b in basis], axis=1)
    expected = (UP_HEAD.astype(np.float64)[2] @ matrix).reshape(1, 1, 3, 3)
    x = example((1, 1, 3, 3))
    result = Explainer(path, cache=False).attribute(x, target=2)
    forward = relative_error(result.class_logits, original.run(None, {"x": x})[0])
    error = relative_error(result.maps, expected)
    print(f"opset {opset} Upsample {mode}: forward {forward:.1e}, gradient {error:.1e}")
    assert forward < F32 and error < F32


def test_an_upgrade_that_changes_the_outputs_is_refused(monkeypatch):
    """The forward check itself: with the Upsample fix undone, linear Upsample's Resize uses
    half-pixel coordinates, and the model is refused rather than explained wrongly."""
    from onnxpath.intake import legacy
    monkeypatch.setattr(legacy, "resize_as_upsample", lambda model, old: model)
    with pytest.raises(ModelError, match="changes its outputs"):
        normalise(upsample_model(8, "linear"), (1, 1, 3, 3))
