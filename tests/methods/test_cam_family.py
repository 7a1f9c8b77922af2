"""The CAM family against pytorch-grad-cam 1.5.7 and Captum's GuidedGradCam, and through the CLI.

pytorch-grad-cam runs on the float64 twin of the torch network, onnxpath on its float32 ONNX
export, same layer, same classes, same inputs. Where pytorch-grad-cam's raw CAM is reachable
(`get_cam_image`, before its ReLU, min-max and cv2 resize) the raw maps are compared: theirs,
at the layer's h x w, is upsampled by the same bilinear map onnxpath's method uses. End to end,
their whole pipeline (`cam(input, targets)`) is compared with onnxpath's `relu=True` map scaled
by the same per-image min-max, at a layer of the input's size (no resize on either side).
Acceptance: Pearson >= 0.9999 (both sides are deterministic) and relative L2 <= 1e-3.
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
from captum.attr import GuidedGradCam
from onnx import helper
from onnx_nets import conv_net
from torch_nets import ResidualNet, build

from onnxpath.cli import main
from onnxpath.explainer import Explainer
from onnxpath.methods import resolve_method
from onnxpath.methods._common import bilinear_resize
from onnxpath.methods.eigencam import first_component_map
from tests.oracle_libs import oracle

# onnxpath's name -> pytorch-grad-cam's class
CLASSES = {"gradcam-plus-plus": "GradCAMPlusPlus", "xgradcam": "XGradCAM",
           "hirescam": "HiResCAM", "layercam": "LayerCAM", "scorecam": "ScoreCAM",
           "ablationcam": "AblationCAM", "eigencam": "EigenCAM"}
CAMS = list(CLASSES)
# Their weights or gradients can be negative at the least likely class; the others' maps are
# sums of non-negative terms (ReLU'd gradients, softmax weights, ReLU activations).
SIGNED = ("xgradcam", "hirescam", "ablationcam")
MODELS = Path(__file__).resolve().parents[2] / "models"
IMAGE = MODELS / "photos" / "chelsea.jpg"


def figures(name: str, ours: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    pearson = np.corrcoef(ours.ravel(), ref.ravel())[0, 1]
    rel_l2 = np.linalg.norm(ours - ref) / np.linalg.norm(ref)
    print(f"\n[grad-cam] {name:44s} pearson={pearson:.7f} rel_l2={rel_l2:.2e}")
    return pearson, rel_l2


def agree(name: str, ours: np.ndarray, ref: np.ndarray) -> None:
    pearson, rel_l2 = figures(name, ours, ref)
    assert pearson >= 0.9999, f"{name}: Pearson {pearson}"
    assert rel_l2 <= 1e-3, f"{name}: relative L2 {rel_l2}"


def scale(maps: np.ndarray) -> np.ndarray:
    """pytorch-grad-cam's scale_cam_image without the resize: per image, (m - min) / max."""
    shifted = maps - maps.min(axis=(-2, -1), keepdims=True)
    return shifted / (1e-7 + shifted.max(axis=(-2, -1), keepdims=True))


def their_post_processing(maps: np.ndarray) -> np.ndarray:
    """What BaseCAM does to one layer's CAM: ReLU and scale (compute_cam_per_layer), then
    ReLU and scale again (aggregate_multi_layers); the resizes are identities here."""
    return scale(np.maximum(scale(np.maximum(maps, 0.0)), 0.0))


def their_cam(name: str, model, layer, xt, targets, raw: bool):
    """pytorch-grad-cam's map: the raw CAM get_cam_image returns (raw=True), or its whole
    pipeline's output."""
    library = oracle("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    cam = getattr(library, CLASSES[name])(model=model, target_layers=[layer])
    captured = []
    inner = cam.get_cam_image

    def keep(*args, **kwargs):
        captured.append(inner(*args, **kwargs))
        return captured[-1]

    cam.get_cam_image = keep
    if hasattr(cam, "batch_size"):
        cam.batch_size = 5  # several chunks over the 16 channels, as onnxpath's below
    out = cam(xt, [ClassifierOutputTarget(int(t)) for t in targets])
    return np.asarray(captured[0], np.float64) if raw else out


def classes(explainer, batch, least_likely: bool) -> np.ndarray:
    logits = explainer.predict(batch)
    return logits.argmin(axis=1) if least_likely else logits.argmax(axis=1)


@pytest.mark.parametrize("name", CAMS)
def test_raw_cam_matches_pytorch_grad_cam(vgg, batch, name):
    """The default layer (the last ReLU, 16 x 16, before global pooling) and the least likely
    class, whose map has negative parts: the raw signed CAMs agree."""
    explainer, model = vgg
    targets = classes(explainer, batch, least_likely=True)
    ours = explainer.attribute(batch, name, targets, internal_batch_size=5)
    assert ours.extras[0]["layer_shape"] == [16, 16, 16]
    theirs = their_cam(name, model, model.features[-1], torch.from_numpy(batch).double(),
                       targets, raw=True)
    theirs = bilinear_resize(theirs, batch.shape[-2:])
    if name == "eigencam":  # a singular vector's sign is arbitrary in theirs, fixed in ours
        theirs *= np.sign((theirs * ours.maps[:, 0]).sum(axis=(1, 2)))[:, None, None]
    elif name in SIGNED:
        assert ours.maps.min() < 0  # the comparison covers the sign
    if name == "scorecam":  # a dead channel per example: its shared blank-input score counts
        layer = model.features(torch.from_numpy(batch).double()).detach().numpy()
        flat = layer.reshape(*layer.shape[:2], -1)
        assert ((flat.max(axis=2) == flat.min(axis=2)).sum(axis=1) >= 1).all()
    agree(f"{name} raw", ours.maps[:, 0], theirs)
    assert np.array_equal(ours.maps[:, 0], ours.maps[:, 2])  # one map, every channel


@pytest.mark.parametrize("name", [n for n in CAMS if n != "eigencam"])
def test_pipeline_matches_pytorch_grad_cam(vgg, batch, name):
    """--layer by tensor name (the first ReLU, 32 x 32: no resize on either side) and the
    predicted class; `relu=True` and a min-max give pytorch-grad-cam's output itself."""
    explainer, model = vgg
    engine = explainer.engine(batch.shape)
    first_relu = next(n.output[0] for n in engine.info.proto.graph.node if n.op_type == "Relu")
    targets = classes(explainer, batch, least_likely=False)
    ours = explainer.attribute(batch, name, targets, layer=first_relu, relu=True,
                               internal_batch_size=3).maps[:, 0]
    theirs = their_cam(name, model, model.features[1], torch.from_numpy(batch).double(),
                       targets, raw=False)
    agree(f"{name} pipeline layer=first relu", their_post_processing(ours), theirs)


def test_eigencam_sign_convention(vgg, batch):
    """Our first component points where the channels together fire more (its map correlates
    positively with the channel sum); pytorch-grad-cam's projection is the same up to sign."""
    library = oracle("pytorch_grad_cam")
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection
    _, model = vgg
    activations = model.features(torch.from_numpy(batch).double()).detach().numpy()
    for a in activations:
        ours = first_component_map(a)
        assert (ours * a.sum(axis=0)).sum() > 0
        flipped = first_component_map(-a)  # the convention holds whatever LAPACK returns
        assert (flipped * -a.sum(axis=0)).sum() > 0
    theirs = get_2d_projection(activations).astype(np.float64)
    ours = np.stack([first_component_map(a) for a in activations])
    sign = np.sign((ours * theirs).sum(axis=(1, 2)))[:, None, None]
    agree("eigencam projection (sign aligned)", ours, sign * theirs)
    assert library.EigenCAM is not None


@pytest.fixture(scope="module")
def residual_batchnorm(tmp_path_factory):
    """ResidualNet exported without constant folding: its BatchNorms stay BatchNormalization
    nodes instead of being folded into the convs."""
    model = build(ResidualNet)
    path = tmp_path_factory.mktemp("bn") / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, 32, 32),), str(path), dynamo=False,
                          opset_version=17, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          do_constant_folding=False)
    explainer = Explainer(path)
    ops = [n.op_type for n in explainer.engine((1, 3, 32, 32)).info.proto.graph.node]
    assert ops.count("BatchNormalization") == 4
    return explainer, copy.deepcopy(model).double()


@pytest.mark.parametrize("net", ["vgg", "residual", "residual_batchnorm"])
def test_fullgrad_matches_pytorch_grad_cam(request, batch, net):
    """VGGNet: biased convs. ResidualNet: bias-free convs with BatchNorm (folded into the conv
    at export, its bias then the conv's; or kept as BatchNormalization nodes), a strided conv
    and a skip branch. Both maps are the sum min-max scaled per image."""
    library = oracle("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    explainer, model = request.getfixturevalue(net)
    targets = classes(explainer, batch, least_likely=False)
    ours = explainer.attribute(batch, "fullgrad", targets)
    theirs = library.FullGrad(model=model, target_layers=[])(
        torch.from_numpy(batch).double(), [ClassifierOutputTarget(int(t)) for t in targets])
    assert ours.extras[0]["bias_layers"] == 4
    agree(f"fullgrad {net}", ours.maps[:, 0], theirs)


@pytest.mark.parametrize("least_likely", [False, True])
def test_guided_gradcam_matches_captum(vgg, batch, least_likely):
    """Captum's GuidedGradCam (its Grad-CAM ReLU'd) with the paper's bilinear upsampling. At
    the least likely class the Grad-CAM has negative parts, which relu=False keeps."""
    explainer, model = vgg
    targets = classes(explainer, batch, least_likely)
    ours = explainer.attribute(batch, "guided-gradcam", targets).maps
    xt, tt = torch.from_numpy(batch).double(), torch.from_numpy(targets)
    theirs = GuidedGradCam(model, model.features[-1]).attribute(xt, tt,
                                                                interpolate_mode="bilinear")
    agree(f"guided-gradcam least_likely={least_likely}", ours, theirs.detach().numpy())
    if least_likely:
        signed = explainer.attribute(batch, "guided-gradcam", targets, relu=False).maps
        assert figures("guided-gradcam relu=False", signed, theirs.detach().numpy())[1] > 1e-2


@pytest.mark.parametrize("name", [*CAMS, "fullgrad", "guided-gradcam"])
def test_fixed_batch_models_are_padded(tmp_path, name):
    """A model exported with batch 1 takes one row per run (the tail runs of Ablation-CAM and
    the masked runs of Score-CAM included), and gives the dynamic model's maps."""
    x = np.random.default_rng(5).standard_normal((2, 3, 16, 16)).astype(np.float32)
    fixed = Explainer(conv_net(tmp_path / "fixed.onnx", batch=1))
    dynamic = Explainer(conv_net(tmp_path / "dynamic.onnx"))
    options = {"internal_batch_size": 4} if name in ("scorecam", "ablationcam") else {}
    ours = fixed.attribute(x, name, **options).maps
    assert np.abs(ours).max() > 0
    np.testing.assert_allclose(ours, dynamic.attribute(x, name, **options).maps, rtol=1e-4,
                               atol=1e-5)


def channels_last_net(path, like) -> str:
    """`like` (conv_net) behind a Transpose: an N x H x W x C input, as TensorFlow exports."""
    model = onnx.load(like)
    size = model.graph.input[0].type.tensor_type.shape.dim[2].dim_value
    del model.graph.input[:]
    model.graph.input.append(helper.make_tensor_value_info("x_nhwc", onnx.TensorProto.FLOAT,
                                                           ["N", size, size, 3]))
    model.graph.node.insert(0, helper.make_node("Transpose", ["x_nhwc"], ["x"],
                                                perm=[0, 3, 1, 2]))
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("name", ["gradcam", *CAMS, "fullgrad", "guided-gradcam"])
def test_channels_last_models_get_the_same_maps(tmp_path, name):
    """A TensorFlow-style N x H x W x C input: the map lies along H and W and is repeated along
    the last axis; it is the N x C x H x W model's map, transposed."""
    x = np.random.default_rng(6).standard_normal((2, 3, 16, 16)).astype(np.float32)
    nchw = conv_net(tmp_path / "nchw.onnx")
    nhwc = Explainer(channels_last_net(tmp_path / "nhwc.onnx", nchw))
    ours = nhwc.attribute(x.transpose(0, 2, 3, 1), name).maps
    reference = Explainer(nchw).attribute(x, name).maps.transpose(0, 2, 3, 1)
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("typed, registered", [
    ("gradcam++", "gradcam-plus-plus"), ("GradCAMPlusPlus", "gradcam-plus-plus"),
    ("XGradCAM", "xgradcam"), ("HiResCAM", "hirescam"), ("LayerCAM", "layercam"),
    ("ScoreCAM", "scorecam"), ("AblationCAM", "ablationcam"), ("EigenCAM", "eigencam"),
    ("FullGrad", "fullgrad"), ("GuidedGradCam", "guided-gradcam"),
    ("guided_gradcam", "guided-gradcam"), ("score-cam", "scorecam")])
def test_library_names_resolve(typed, registered):
    assert resolve_method(typed) == registered


def run_cli(capsys, *args):
    code = main(["attribute", *map(str, args)])
    captured = capsys.readouterr()
    return code, [json.loads(line) for line in captured.out.splitlines() if line], captured.err


def test_every_cam_runs_on_efficientnet(capsys, tmp_path):
    """The shipped EfficientNet-Lite0, default layer (its last 1280 x 7 x 7 map): every method
    of the family in one call; the cat's class, a map per method, shaped like the input."""
    methods = [*CAMS, "fullgrad", "guided-gradcam"]
    code, lines, err = run_cli(capsys, MODELS / "efficientnet_lite0.onnx", IMAGE, "-m",
                               ",".join(methods), "-o", tmp_path, "--quiet",
                               "--internal-batch-size", "64")
    assert code == 0, err
    assert [line["method"] for line in lines] == methods
    for line in lines:
        assert line["error"] is None and line["label"] in ("tabby", "tiger cat", "Egyptian cat")
        maps = np.load(line["outputs"]["npy"])
        assert maps.shape == (3, 224, 224) and np.abs(maps).max() > 0, line["method"]
        if line["method"] != "fullgrad":
            assert line["extras"]["layer_shape"] == [1280, 7, 7]


@pytest.mark.parametrize("model, inputs", [
    ("churn.onnx", ["customers.csv"]),
    ("sentiment.onnx", ["reviews.txt", "--tokenizer", "tokenizer.json"])])
@pytest.mark.parametrize("name", ["gradcam", "gradcam-plus-plus", "scorecam", "eigencam",
                                  "fullgrad", "guided-gradcam"])
def test_table_and_text_models_are_refused_in_one_line(capsys, model, inputs, name):
    """A CAM is a map over an image layer's grid; a table row or a token sequence has none.
    (The text model's 4-D attention scores are no image grid either.)"""
    examples = MODELS / "examples"
    code, lines, err = run_cli(capsys, examples / model,
                               *[examples / i if "." in i else i for i in inputs], "-m", name)
    assert code == 2 and not lines
    assert err.startswith("onnxpath: error:") and "needs an image model" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
