"""The Captum and Quantus metrics of `evaluate` against Captum and Quantus themselves.

One shared case: a small torch CNN exported to float32 ONNX for onnxpath, and its float64 copy
for the oracles; the same inputs and targets; onnxpath's own gradient maps handed to the oracle
as its attributions (or, where the metric re-runs the method, Captum's Saliency, the same
method, as the oracle's explain_func); and the same random draws, handed to the oracle through
its `perturb_func`, or through `np.random.choice` and Quantus's layer generator where Quantus
draws them itself. Quantus normalises by the maximum over its whole batch; it is told to
normalise each image alone (`normalise_axes`), as onnxpath does. Each comparison prints its
figures (`pytest -s`).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from captum.attr import Saliency
from captum.metrics import infidelity, sensitivity_max
from torch import nn

from onnxpath import Explainer
from onnxpath.evaluate import Settings, evaluate, faithfulness, robustness, sanity
from onnxpath.evaluate import complexity as complexity_metrics
from tests.oracle_libs import oracle

SIZE = 12
PER_IMAGE = {"normalise_axes": (1, 2, 3)}  # Quantus's normalise_by_max, image by image


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4, 5)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 3)
        x = nn.functional.adaptive_avg_pool2d(x, 2)
        return self.fc(torch.flatten(x, 1))


class AsDouble(nn.Module):
    """The float64 network behind Quantus's float32 input tensors."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.eval()

    def forward(self, x):
        return self.net(x.double())


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    torch.manual_seed(0)
    net = SmallNet().eval()
    path = tmp_path_factory.mktemp("quantus") / "small.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, SIZE, SIZE),), str(path), dynamo=False,
                      opset_version=17, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    explainer = Explainer(str(path))
    x = np.random.default_rng(0).random((4, 3, SIZE, SIZE)).astype(np.float32)  # image-like
    net64 = SmallNet().double().eval()
    net64.load_state_dict(net.state_dict())
    targets = explainer.predict(x).argmax(axis=1)
    maps = explainer.attribute(x, "gradient", targets).maps
    return explainer, net64, x, targets, maps, path


def saliency(model, inputs, targets, **kwargs) -> np.ndarray:
    """Quantus's explain_func: Captum's Saliency without abs, onnxpath's `gradient`."""
    xt = torch.as_tensor(np.asarray(inputs), dtype=torch.float64)
    return Saliency(model).attribute(xt, target=torch.as_tensor(targets), abs=False).numpy()


def agree(name: str, ours, theirs, rtol: float = 1e-6) -> None:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    rel = np.abs(ours - theirs).max() / np.abs(theirs).max()
    pearson = np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] if ours.size > 1 else 1.0
    print(f"\n[oracle] {name:36s} ours={np.round(ours, 6).tolist()} rel={rel:.2e} "
          f"pearson={pearson:.7f}")
    assert ours.shape == theirs.shape
    assert rel <= rtol, f"{name}: relative error {rel:.2e}"


def forward(explainer):
    return explainer.predict


@pytest.mark.parametrize("normalize", [False, True])
def test_infidelity_matches_captum(case, normalize):
    explainer, net64, x, targets, maps, _ = case
    samples, std = 6, 0.1
    ours = faithfulness.infidelity(forward(explainer), x, maps, targets, samples, std,
                                   normalize, batch_size=8, seed=3)
    noise = np.concatenate([faithfulness.infidelity_noise(x.shape[1:], samples, std, 3, i)
                            for i in range(len(x))])

    def perturb(inputs):
        assert inputs.shape[0] == len(noise)  # repeat_interleave: image-major, like ours
        given = torch.from_numpy(noise).double()
        return given, torch.from_numpy(np.repeat(x, samples, 0) - noise).double()

    theirs = infidelity(net64, perturb, torch.from_numpy(x).double(),
                        torch.from_numpy(maps).double(), target=torch.from_numpy(targets),
                        n_perturb_samples=samples, normalize=normalize)
    # Infidelity of a gradient map is a second-order residual (~1e-6): ORT's float32 logits
    # bound the relative error near 1e-5, so the check is Pearson >= 0.9999 over the inputs.
    agree(f"infidelity normalize={normalize}", ours, theirs.numpy(), rtol=1e-4)
    assert np.corrcoef(ours, theirs.numpy())[0, 1] >= 0.9999


def test_max_sensitivity_matches_captum(case):
    explainer, net64, x, targets, maps, _ = case
    samples, radius = 5, 0.05

    def explain(batch, batch_targets):
        return explainer.attribute(batch, "gradient", batch_targets).maps

    ours = robustness.max_sensitivity(explain, x, maps, targets, samples, radius, seed=2)
    perturbed = np.concatenate([robustness.sensitivity_inputs(x[i], samples, radius, 2, i)
                                for i in range(len(x))])

    def perturb(inputs, perturb_radius):
        assert inputs.shape[0] == len(perturbed) and perturb_radius == radius
        return torch.from_numpy(perturbed).double()

    theirs = sensitivity_max(lambda inputs, target: Saliency(net64).attribute(
        inputs, target=target, abs=False), torch.from_numpy(x).double(), perturb,
        perturb_radius=radius, n_perturb_samples=samples, target=torch.from_numpy(targets))
    agree("max-sensitivity", ours, theirs.numpy(), rtol=1e-5)


def test_faithfulness_correlation_matches_quantus(case, monkeypatch):
    quantus = oracle("quantus")
    explainer, net64, x, targets, maps, _ = case
    runs, subset = 20, 50
    ours = faithfulness.faithfulness_correlation(forward(explainer), x, maps, targets, runs,
                                                 subset, batch_size=16, seed=1)
    subsets = [faithfulness.faithfulness_subsets(x[0].size, runs, subset, 1, i)
               for i in range(len(x))]
    calls = iter(range(runs * len(x)))

    def choice(features, size, replace=True):
        k = next(calls)  # Quantus draws run by run, image by image within a run
        assert (features, size, replace) == (x[0].size, subset, False)
        return subsets[k % len(x)][k // len(x)]

    metric = quantus.FaithfulnessCorrelation(nr_runs=runs, subset_size=subset,
                                             normalise_func_kwargs=PER_IMAGE,
                                             return_aggregate=False, disable_warnings=True)
    with monkeypatch.context() as patch:
        patch.setattr(np.random, "choice", choice)
        theirs = metric(model=AsDouble(net64), x_batch=x, y_batch=targets, a_batch=maps)
    agree("faithfulness-correlation", ours, theirs)


@pytest.mark.parametrize("step", [24, SIZE * SIZE])
def test_monotonicity_matches_quantus_with_the_input_inserted(case, step):
    """Quantus 0.6.0's Monotonicity re-inserts the baseline (every map scores True); its
    perturb_func here inserts the input's features, as Arya et al.'s metric does. The curves
    are compared too: the scores alone are 0/1 (two steps: some curves rise)."""
    quantus = oracle("quantus")
    explainer, net64, x, targets, maps, _ = case
    curves = faithfulness.monotonicity_curves(forward(explainer), x, maps, targets, step, 16)
    flat_x = x.reshape(len(x), -1)
    seen = []

    def insert_input(arr, indices, **kwargs):
        out = arr.copy()
        rows = np.arange(len(arr))[:, None]
        out[rows, indices] = flat_x[rows, indices]
        return out

    metric = quantus.Monotonicity(features_in_step=step, perturb_func=insert_input,
                                  normalise_func_kwargs=PER_IMAGE, disable_warnings=True)
    model = AsDouble(net64)
    original = model.forward

    def recording(t):  # every prediction Quantus makes, in order
        out = original(t)
        seen.append(out.detach().numpy())
        return out

    model.forward = recording
    theirs = metric(model=model, x_batch=x, y_batch=targets, a_batch=maps)
    # Quantus's Monotonicity reads the softmax probability (its default softmax=True).
    probs = [np.exp(s - s.max(1, keepdims=True)) for s in seen]
    theirs_curves = np.stack([(p / p.sum(1, keepdims=True))[np.arange(len(x)), targets]
                              for p in probs], axis=1)
    agree("monotonicity curves", curves, theirs_curves, rtol=1e-5)
    scores = faithfulness.monotonic(curves)
    print(f"[oracle] monotonicity step={step}: ours={scores.tolist()} quantus={theirs}")
    np.testing.assert_array_equal(scores, np.asarray(theirs, dtype=float))


def test_local_lipschitz_matches_quantus(case):
    quantus = oracle("quantus")
    explainer, net64, x, targets, maps, _ = case
    samples, std = 4, 0.1

    def explain(batch, batch_targets):
        return explainer.attribute(batch, "gradient", batch_targets).maps

    ours = robustness.local_lipschitz(explain, x, maps, targets, samples, std, seed=5)
    perturbed = [robustness.lipschitz_inputs(x[i], samples, std, 5, i) for i in range(len(x))]
    calls = iter(range(samples))

    def perturb(arr, indices, **kwargs):
        j = next(calls)  # Quantus perturbs the whole batch once per sample
        return np.stack([p[j].reshape(-1) for p in perturbed])

    metric = quantus.LocalLipschitzEstimate(nr_samples=samples, perturb_func=perturb,
                                            normalise_func_kwargs=PER_IMAGE,
                                            disable_warnings=True)
    theirs = metric(model=AsDouble(net64), x_batch=x, y_batch=targets, a_batch=maps,
                    explain_func=saliency)
    agree("local-lipschitz", ours, theirs, rtol=1e-5)


@pytest.mark.parametrize("name", ["Complexity", "Sparseness"])
def test_complexity_and_sparseness_match_quantus(case, name):
    quantus = oracle("quantus")
    explainer, net64, x, targets, maps, _ = case
    ours = getattr(complexity_metrics, name.lower())(maps)
    metric = getattr(quantus, name)(normalise_func_kwargs=PER_IMAGE, disable_warnings=True)
    theirs = metric(model=AsDouble(net64), x_batch=x, y_batch=targets, a_batch=maps.copy())
    agree(name.lower(), ours, theirs)


def test_mprt_matches_quantus_on_the_same_randomised_layers(case, monkeypatch):
    quantus = oracle("quantus")
    from quantus.helpers.model.pytorch_model import PyTorchModel

    explainer, net64, x, targets, maps, path = case
    steps = list(sanity.cascade(explainer.proto, None, 0, 0.1))
    state = net64.state_dict()
    assert {n for _, layer, _ in steps for n in layer.initializers} <= set(state)

    def same_layers(self, order="top_down", seed=42):
        for _, layer, model in steps:  # cumulative, from the output, as onnxpath draws them
            weights = {i.name: torch.from_numpy(onnx.numpy_helper.to_array(i).copy()).double()
                       for i in model.graph.initializer if i.name in state}
            randomised = SmallNet().double().eval()
            randomised.load_state_dict({**state, **weights})
            yield layer.node, AsDouble(randomised)

    monkeypatch.setattr(PyTorchModel, "get_random_layer_generator", same_layers)
    monkeypatch.setattr(PyTorchModel, "random_layer_generator_length",
                        property(lambda self: len(steps)))
    metric = quantus.MPRT(disable_warnings=True)
    theirs = metric(model=AsDouble(net64), x_batch=x, y_batch=targets, a_batch=maps,
                    explain_func=saliency)
    report = evaluate(explainer, x, ["gradient"], ["mprt"], Settings(batch_size=8),
                      targets=targets)
    ours = next(s for s in report.series if s.metric == "mprt").values  # (N, steps)
    assert list(theirs)[1:] == [layer.node for _, layer, _ in steps]
    agree("mprt (every step)", ours, np.array([theirs[k] for k in list(theirs)[1:]]).T,
          rtol=1e-6)
    assert np.all(np.abs(ours[:, -1]) < 0.9)  # randomising every layer decorrelates
