"""Models saved by ONNX Runtime's optimizer (ORT_ENABLE_EXTENDED) hold com.microsoft fused ops
(FusedConv, FusedGemm, Gelu, BiasGelu, FastGelu); intake/unfuse.py rewrites them as standard
ops. The unfused model computes what the fused one does, onnxpath's gradient of it matches
torch's in float64, and the pathway method finds the fused ReLUs again."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxpath.explainer import Explainer
from onnxpath.intake.unfuse import unfuse

torch = pytest.importorskip("torch")
nn = torch.nn
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class ConvNet(nn.Module):
    """Conv + activation twice, then Linear + activation, Linear (the logits)."""

    def __init__(self, act, head_act):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), act(),
                                  nn.Conv2d(4, 4, 3, stride=2), act(), nn.Flatten(),
                                  nn.Linear(4 * 3 * 3, 8), head_act(), nn.Linear(8, 5))

    def forward(self, x):
        return self.body(x)


class TokenNet(nn.Module):
    """A 3-d Linear (MatMul + Add: BiasGelu after fusion), GELU, mean, Linear."""

    def __init__(self):
        super().__init__()
        self.first = nn.Linear(6, 10)
        self.act = nn.GELU()
        self.head = nn.Linear(10, 3)

    def forward(self, x):
        return self.head(self.act(self.first(x)).mean(dim=1))


def relu6():
    return nn.ReLU6()


CASES = {
    "conv_relu": (lambda: ConvNet(nn.ReLU, nn.ReLU), (2, 3, 8, 8), {"FusedConv", "FusedGemm"}),
    "conv_relu6": (lambda: ConvNet(relu6, nn.ReLU), (2, 3, 8, 8), {"FusedConv"}),
    "conv_gelu": (lambda: ConvNet(nn.ReLU, nn.GELU), (2, 3, 8, 8), {"FusedConv"}),
    "tokens_gelu": (lambda: TokenNet(), (2, 4, 6), set()),
}
GELUS = {"Gelu", "BiasGelu", "FastGelu"}


def export(module, shape, path):
    torch.manual_seed(0)
    x = torch.randn(*shape)
    torch.onnx.export(module.eval(), (x,), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}})


def optimise(src, dst):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(dst)
    ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])


def contrib_ops(path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node if n.domain == "com.microsoft"}


def run(model, x):
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("unfuse")
    built = {}
    for name, (make, shape, expected) in CASES.items():
        torch.manual_seed(1)
        module = make().eval()
        export(module, shape, folder / f"{name}.onnx")
        optimise(folder / f"{name}.onnx", folder / f"{name}.opt.onnx")
        built[name] = (module, shape, expected, folder / f"{name}.onnx",
                       folder / f"{name}.opt.onnx")
    return built


def example(shape, seed=3):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@pytest.mark.parametrize("name", list(CASES))
def test_the_optimizer_fuses_and_unfuse_removes_them(models, name):
    _, shape, expected, _, optimised = models[name]
    found = contrib_ops(optimised)
    assert expected <= found, found
    if "gelu" in name:
        assert found & GELUS, found
    fused = onnx.load(str(optimised))
    plain = unfuse(fused)
    assert not contrib_ops_of(plain)
    onnx.checker.check_model(plain, full_check=True)
    x = example(shape)
    diff = np.abs(run(plain, x) - run(fused, x)).max()
    assert diff <= 1e-5, diff


def contrib_ops_of(model: onnx.ModelProto) -> set[str]:
    return {n.op_type for n in model.graph.node if n.domain == "com.microsoft"}


def torch_gradient(module, x, targets):
    double = module.double()
    inputs = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
    logits = double(inputs)
    logits[torch.arange(len(x)), torch.from_numpy(targets)].sum().backward()
    module.float()
    return inputs.grad.numpy()


@pytest.mark.parametrize("name", list(CASES))
def test_the_gradient_of_the_optimised_model_matches_torch(models, name):
    module, shape, _, _, optimised = models[name]
    x = example(shape)
    result = Explainer(optimised, cache=False).attribute(x, method="gradient")
    targets = np.asarray(result.targets)
    want = torch_gradient(module, x, targets)
    error = np.abs(result.maps - want).max() / np.abs(want).max()
    assert error <= 1e-4, error


@pytest.mark.parametrize("name", ["conv_relu", "conv_relu6"])
def test_pathway_finds_the_fused_relus(models, name):
    _, shape, _, original, optimised = models[name]
    x = example(shape)
    before = Explainer(original, cache=False).attribute(x, method="pathway")
    after = Explainer(optimised, cache=False).attribute(x, method="pathway")
    assert after.extras[0]["layers"] == before.extras[0]["layers"] == 3
    np.testing.assert_allclose(after.maps, before.maps, rtol=1e-4,
                               atol=1e-5 * np.abs(before.maps).max())


def test_fused_conv_with_a_sum_and_clip_params_and_other_contrib_ops_left():
    """FusedConv's 4th input Z is added before the activation; Clip takes activation_params
    as its bounds; a contrib op unfuse does not know stays."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(size=(2, 1, 3, 3)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.normal(size=(2,)).astype(np.float32), "b")
    nodes = [helper.make_node("FusedConv", ["x", "w", "b", "z"], ["y"], domain="com.microsoft",
                              pads=[1, 1, 1, 1], activation="Clip",
                              activation_params=[-0.5, 0.7]),
             helper.make_node("FusedGemm", ["f", "g"], ["h"], domain="com.microsoft",
                              transB=1, activation="LeakyRelu", activation_alpha=0.2),
             helper.make_node("Gelu", ["h"], ["gelu"], domain="com.microsoft"),
             helper.make_node("FastGelu", ["h", "c"], ["fast"], domain="com.microsoft"),
             helper.make_node("Attention", ["q"], ["r"], domain="com.microsoft")]
    plain = unfuse(helper.make_model(helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                     for n in ("x", "z", "f", "g", "c", "q")],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
         for n in ("y", "gelu", "fast", "r")], [weight, bias]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]))
    ops = [n.op_type for n in plain.graph.node]
    assert ops[:3] == ["Conv", "Add", "Clip"] and "Gemm" in ops and "LeakyRelu" in ops
    assert ops[-1] == "Attention" and "Erf" in ops and "Tanh" in ops
    leaky = next(n for n in plain.graph.node if n.op_type == "LeakyRelu")
    assert helper.get_attribute_value(leaky.attribute[0]) == pytest.approx(0.2)
    clip = next(n for n in plain.graph.node if n.op_type == "Clip")
    bounds = {t.name: numpy_helper.to_array(t) for t in plain.graph.initializer}
    assert [float(bounds[i]) for i in clip.input[1:]] == pytest.approx([-0.5, 0.7])
    assert not any("activation" in a.name for n in plain.graph.node for a in n.attribute)


def fast_gelu_model(path) -> None:
    """x (N×6) → MatMul → FastGelu with a bias (com.microsoft) → MatMul → logits (N×3): the
    CPU optimizer does not fuse torch's tanh GELU, so this one is written by hand."""
    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(rng.normal(size=s).astype(np.float32), n)
             for n, s in (("w1", (6, 8)), ("c", (8,)), ("w2", (8, 3)))]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]),
         helper.make_node("FastGelu", ["h", "c"], ["g"], domain="com.microsoft"),
         helper.make_node("MatMul", ["g", "w2"], ["logits"])], "fast_gelu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                      helper.make_opsetid("com.microsoft", 1)]),
              path)


def test_fast_gelu_forward_and_gradient(tmp_path):
    fast_gelu_model(tmp_path / "fast.onnx")
    fused = onnx.load(str(tmp_path / "fast.onnx"))
    plain = unfuse(fused)
    x = example((4, 6))
    diff = np.abs(run(plain, x) - run(fused, x)).max()
    assert diff <= 1e-5, diff
    result = Explainer(tmp_path / "fast.onnx", cache=False).attribute(x, method="gradient")
    # Central differences in float64 on the unfused model (its constants cast to float64).
    double = onnx.ModelProto.FromString(plain.SerializeToString())
    for t in double.graph.initializer:
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name))
    for v in (*double.graph.input, *double.graph.output, *double.graph.value_info):
        v.type.tensor_type.elem_type = TensorProto.DOUBLE
    x64, step = x.astype(np.float64), 1e-6
    want = np.zeros_like(x64)
    rows = np.arange(len(x))
    targets = np.asarray(result.targets)
    for j in range(x.shape[1]):
        up, down = x64.copy(), x64.copy()
        up[:, j] += step
        down[:, j] -= step
        change = run(double, up)[rows, targets] - run(double, down)[rows, targets]
        want[:, j] = change / (2 * step)
    error = np.abs(result.maps - want).max() / np.abs(want).max()
    assert error <= 1e-4, error
