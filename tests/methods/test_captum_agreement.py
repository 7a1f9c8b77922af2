"""onnxpath's baseline methods against Captum with identical parameters.

Acceptance: Pearson correlation >= 0.999 and relative L2 error <= 1e-3 per method. Captum runs
on a float64 copy of the torch network; onnxpath runs the exported float32 ONNX model. Each
comparison prints its figures (`pytest -s` shows them).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import (
    Deconvolution,
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)

from onnxpath.methods.integrated_gradients import RULES


def agree(name: str, ours: np.ndarray, theirs: torch.Tensor) -> None:
    ref = theirs.detach().numpy().astype(np.float64)
    ours = np.asarray(ours, dtype=np.float64)
    assert ours.shape == ref.shape
    pearson = np.corrcoef(ours.ravel(), ref.ravel())[0, 1]
    rel_l2 = np.linalg.norm(ours - ref) / np.linalg.norm(ref)
    print(f"\n[captum] {name:40s} pearson={pearson:.7f} rel_l2={rel_l2:.2e}")
    assert pearson >= 0.999, f"{name}: Pearson {pearson}"
    assert rel_l2 <= 1e-3, f"{name}: relative L2 {rel_l2}"


def setup(pair, batch):
    explainer, model = pair
    targets = explainer.predict(batch).argmax(axis=1)
    return explainer, model, torch.from_numpy(batch).double(), targets, torch.from_numpy(targets)


@pytest.mark.parametrize("absolute", [False, True])
def test_gradient_matches_saliency(residual, batch, absolute):
    explainer, model, xt, targets, tt = setup(residual, batch)
    ours = explainer.attribute(batch, "gradient", targets, absolute=absolute).maps
    agree(f"gradient abs={absolute}", ours, Saliency(model).attribute(xt, tt, abs=absolute))


def test_input_x_gradient(residual, batch):
    explainer, model, xt, targets, tt = setup(residual, batch)
    ours = explainer.attribute(batch, "input-x-gradient", targets).maps
    agree("input-x-gradient", ours, InputXGradient(model).attribute(xt, tt))


@pytest.mark.parametrize("rule", RULES)
def test_integrated_gradients(residual, batch, rule):
    explainer, model, xt, targets, tt = setup(residual, batch)
    result = explainer.attribute(batch, "integrated-gradients", targets, steps=50, rule=rule,
                                 internal_batch_size=16)
    theirs, delta = IntegratedGradients(model).attribute(
        xt, target=tt, n_steps=50, method=rule.replace("-", "_"), internal_batch_size=16,
        return_convergence_delta=True)
    agree(f"integrated-gradients {rule}", result.maps, theirs)
    ours_delta = np.array([e["delta"] for e in result.extras])
    scale = np.abs([e["f_x"] - e["f_baseline"] for e in result.extras]).max()
    np.testing.assert_allclose(ours_delta, delta.numpy(), atol=1e-3 * scale)


def test_integrated_gradients_nonzero_baseline(residual, batch):
    explainer, model, xt, targets, tt = setup(residual, batch)
    reference = np.full_like(batch, 0.25)
    ours = explainer.attribute(batch, "integrated-gradients", targets, baseline=reference,
                               steps=20).maps
    theirs = IntegratedGradients(model).attribute(xt, torch.from_numpy(reference).double(),
                                                  target=tt, n_steps=20)
    agree("integrated-gradients baseline=0.25", ours, theirs)


@pytest.mark.parametrize("variant,nt_type", [("mean", "smoothgrad"),
                                             ("square", "smoothgrad_sq"),
                                             ("var", "vargrad")])
@pytest.mark.parametrize("absolute", [False, True])
def test_smoothgrad_matches_noise_tunnel(residual, batch, monkeypatch, variant, nt_type,
                                         absolute):
    """Captum draws its noise with one `torch.normal(0, stdevs)` call shaped (N * samples, ...),
    rows example-major (it repeat_interleaves the inputs). Patching torch.normal hands it the
    very tensors we inject through `noise_tensors` (N, samples, ...), so both average the
    gradients at the same noisy points."""
    explainer, model, xt, targets, tt = setup(residual, batch)
    samples, sigma = 5, 0.3
    noise = (np.random.default_rng(7).standard_normal((len(batch), samples, *batch.shape[1:]))
             * sigma).astype(np.float32)
    ours = explainer.attribute(batch, "smoothgrad", targets, samples=samples, noise=sigma,
                               variant=variant, absolute=absolute, noise_tensors=noise).maps
    flat = torch.from_numpy(noise.reshape(-1, *batch.shape[1:])).double()

    def fake_normal(mean, std, *args, **kwargs):
        assert tuple(std.shape) == tuple(flat.shape)
        return flat.clone()

    monkeypatch.setattr(torch, "normal", fake_normal)
    theirs = NoiseTunnel(Saliency(model)).attribute(
        xt, nt_type=nt_type, nt_samples=samples, stdevs=sigma, target=tt, abs=absolute)
    agree(f"smoothgrad {variant} abs={absolute}", ours, theirs)


def test_guided_backprop(vgg, batch):
    explainer, model, xt, targets, tt = setup(vgg, batch)
    ours = explainer.attribute(batch, "guided-backprop", targets).maps
    agree("guided-backprop", ours, GuidedBackprop(model).attribute(xt, tt))


def test_guided_backprop_relu_family(relu_family, batch):
    """ReLU6, LeakyRelu and PRelu get the swapped rule too (issue 10): Captum's hook on
    nn.ReLU subclasses computing those functions; hardtanh stays plain in both."""
    explainer, model, xt, targets, tt = setup(relu_family, batch)
    ours = explainer.attribute(batch, "guided-backprop", targets).maps
    agree("guided-backprop relu family", ours, GuidedBackprop(model).attribute(xt, tt))
    plain = explainer.attribute(batch, "gradient", targets).maps
    assert np.abs(ours - plain).max() > 0.1 * np.abs(plain).max()


def test_deconvnet_relu_family(relu_family, batch):
    explainer, model, xt, targets, tt = setup(relu_family, batch)
    ours = explainer.attribute(batch, "deconvnet", targets).maps
    agree("deconvnet relu family", ours, Deconvolution(model).attribute(xt, tt))


def test_relu_family_net_exports_every_activation(relu_family, batch):
    """The comparisons above cover what they claim: each op is in the graph, and the first
    ReLU6 is both cut off at 0 and saturated at 6 on the batch."""
    explainer, model = relu_family
    ops = [n.op_type for n in explainer.engine((1, 3, 32, 32)).info.proto.graph.node]
    assert ops.count("Clip") == 3 and {"LeakyRelu", "PRelu", "Relu"} <= set(ops)
    first = model.features[0](torch.from_numpy(batch).double())
    assert (first > 6).float().mean() > 0.01 and (first < 0).float().mean() > 0.01


def test_deconvnet(vgg, batch):
    explainer, model, xt, targets, tt = setup(vgg, batch)
    ours = explainer.attribute(batch, "deconvnet", targets).maps
    agree("deconvnet", ours, Deconvolution(model).attribute(xt, tt))


@pytest.mark.parametrize("relu", [False, True])
def test_gradcam_default_layer(vgg, batch, relu):
    """The least likely class, whose map has negative parts, so the ReLU option matters."""
    explainer, model, xt, _, _ = setup(vgg, batch)
    targets = explainer.predict(batch).argmin(axis=1)
    tt = torch.from_numpy(targets)
    result = explainer.attribute(batch, "gradcam", targets, relu=relu)
    cam = LayerGradCam(model, model.features[-1]).attribute(xt, tt, relu_attributions=relu)
    up = LayerAttribution.interpolate(cam, batch.shape[-2:], interpolate_mode="bilinear")
    assert (up.min() < 0) != relu
    agree(f"gradcam relu={relu}", result.maps, up.expand(-1, batch.shape[1], -1, -1))
    assert result.extras[0]["layer_shape"] == [16, 16, 16]


def test_gradcam_named_layer(vgg, batch):
    """An earlier layer chosen by tensor name: the first ReLU's output, 32x32 (no upsampling)."""
    explainer, model, xt, targets, tt = setup(vgg, batch)
    engine = explainer.engine(batch.shape)
    first_relu = next(n.output[0] for n in engine.info.proto.graph.node if n.op_type == "Relu")
    ours = explainer.attribute(batch, "gradcam", targets, layer=first_relu).maps
    cam = LayerGradCam(model, model.features[1]).attribute(xt, tt)
    agree("gradcam layer=first relu", ours, cam.expand(-1, batch.shape[1], -1, -1))


@pytest.mark.parametrize("window,stride,fill", [(8, 4, 0.0), (5, 3, 0.5)])
def test_occlusion(residual, batch, window, stride, fill):
    explainer, model, xt, targets, tt = setup(residual, batch)
    ours = explainer.attribute(batch, "occlusion", targets, window=window, stride=stride,
                               fill=fill).maps
    theirs = Occlusion(model).attribute(xt, sliding_window_shapes=(3, window, window),
                                        strides=(3, stride, stride), baselines=fill, target=tt,
                                        perturbations_per_eval=64)
    agree(f"occlusion window={window} stride={stride} fill={fill}", ours, theirs)
