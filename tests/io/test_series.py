"""Series and audio: a 1-D CNN exported by torch, read from .npy (C×T), CSV columns and a
16-bit .wav. Maps equal a float64 torch reference; the line plot is written; the sample rate is
checked against the model's metadata; the pathway on this ReLU network is exact."""

from __future__ import annotations

import copy
import warnings
import wave

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from torch import nn

from onnxpath.explainer import Explainer
from onnxpath.io import series
from onnxpath.methods.pathway import critical_pathway
from tests.io.io_helpers import run_cli
from tests.pathways.reference import torch_contributions, torch_pathway_gradient, torch_select

LENGTH, RATE = 256, 8000


class AudioNet(nn.Module):
    def __init__(self, channels: int = 1):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(channels, 8, 9, padding=4), nn.ReLU(), nn.MaxPool1d(4),
            nn.Conv1d(8, 16, 5, padding=2), nn.ReLU(), nn.AdaptiveAvgPool1d(1))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.ReLU(),
                                        nn.Linear(16, 4))

    def forward(self, x):
        return self.classifier(self.features(x))


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    return make_audio(tmp_path_factory.mktemp("series"))


def make_audio(folder):
    """(torch model, its ONNX export with a sample_rate, {"wav"/"npy": (file, signal)})."""
    torch.manual_seed(0)
    model = AudioNet().eval()
    path = folder / "audio.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 1, LENGTH),), str(path), dynamo=False,
                          opset_version=17, input_names=["signal"], output_names=["logits"],
                          dynamic_axes={"signal": {0: "batch"}, "logits": {0: "batch"}})
    proto = onnx.load(path)
    onnx.helper.set_model_props(proto, {"sample_rate": str(RATE)})
    onnx.save(proto, path)
    t = np.arange(LENGTH) / RATE
    signal = (0.5 * np.sin(2 * np.pi * 440 * t) * np.hanning(LENGTH)
              + 0.1 * np.random.default_rng(0).standard_normal(LENGTH))
    quantised = np.round(signal * 32767).astype(np.int16)
    wav = folder / "tone.wav"
    with wave.open(str(wav), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(RATE)
        handle.writeframes(quantised.tobytes())
    npy = folder / "tone.npy"
    np.save(npy, signal[None].astype(np.float32))
    return model, path, {"wav": (wav, quantised / 32768.0), "npy": (npy, signal)}


def torch_gradient(model, x: np.ndarray) -> tuple[np.ndarray, int]:
    double = copy.deepcopy(model).double()
    xt = torch.tensor(x[None, None], dtype=torch.float64, requires_grad=True)
    logits = double(xt)
    target = int(logits.argmax())
    logits[0, target].backward()
    return xt.grad[0].numpy(), target


@pytest.mark.parametrize("kind", ["npy", "wav"])
def test_series_gradient_matches_torch_and_plot_is_written(capsys, audio, tmp_path, kind):
    model, path, inputs = audio
    source, values = inputs[kind]
    code, lines, err = run_cli(capsys, path, source, "-m", "gradient", "-o", tmp_path)
    assert code == 0, err
    expected, target = torch_gradient(model, values.astype(np.float32).astype(np.float64))
    line = lines[0]
    assert line["error"] is None and line["target"] == target
    ours = np.load(line["outputs"]["npy"])
    assert ours.shape == (1, LENGTH)
    error = np.abs(ours - expected).max() / np.abs(expected).max()
    print(f"\n[series] {kind}: gradient vs float64 torch, max relative error {error:.2e}")
    assert error <= 1e-5
    with Image.open(line["outputs"]["png"]) as plot:
        assert plot.size[0] >= 600 and plot.size[1] > 100


def test_csv_columns_are_channels(capsys, audio, tmp_path):
    _, path, inputs = audio
    csv = tmp_path / "signal.csv"
    csv.write_text("mic\n" + "\n".join(f"{v:.8f}" for v in inputs["npy"][1]) + "\n")
    code, lines, err = run_cli(capsys, path, csv, "-m", "integrated-gradients")
    assert code == 0, err
    assert lines[0]["error"] is None


def test_sample_rate_is_checked(capsys, audio):
    _, path, inputs = audio
    code, lines, _ = run_cli(capsys, path, inputs["wav"][0], "--sample-rate", "16000")
    assert code == 1 and "16000" in lines[0]["error"]


@pytest.mark.parametrize("method", ["input-x-gradient", "integrated-gradients", "smoothgrad",
                                    "occlusion", "rise", "lime", "kernel-shap"])
def test_every_method_on_a_series(capsys, audio, method):
    _, path, inputs = audio
    code, lines, err = run_cli(capsys, path, inputs["npy"][0], "-m", method, "--samples", "64",
                               "--rise-masks", "64")
    assert code == 0, err
    assert lines[0]["error"] is None


@pytest.mark.parametrize("prune", [70, 90])
def test_pathway_on_a_1d_cnn_is_exact(audio, prune):
    model, path, inputs = audio
    x = inputs["npy"][1].astype(np.float32)[None, None]
    explainer = Explainer(path, cache=False)
    engine = explainer.engine(x.shape)
    c = int(engine.logits(x).argmax())
    result = explainer.attribute(x, "pathway", c, prune_percent=prune)
    found = critical_pathway(engine, x, [c], prune_percent=prune)
    reference = torch_contributions(model, x.astype(np.float64), c)
    masks = torch_select(reference, prune)
    same = sum(int((m[0] == r).sum()) for m, r in zip(found.masks, masks, strict=True))
    assert same / sum(r.size for r in masks) >= 0.999
    expected = torch_pathway_gradient(model, x.astype(np.float64), c, masks)
    error = np.abs(result.maps[0] - expected).max() / np.abs(expected).max()
    print(f"\n[series] pathway P={prune}: vs float64 torch, max relative error {error:.2e}")
    assert error <= 1e-5


def test_series_field_carries_the_signal_and_its_scores_binned_when_long():
    values = np.linspace(-1, 1, 10)
    raw = np.arange(10, dtype=np.float64)
    field = series.series_field(values, raw)
    assert field == {"values": pytest.approx(values.tolist()), "scores": raw.tolist()}
    binned = series.series_field(values, raw, points=4)
    # Bins of 10 samples into 4: values averaged, scores summed (totals kept).
    bins = [(0, 2), (2, 5), (5, 8), (8, 10)]  # linspace(0, 10, 5) rounded, half to even
    assert binned["values"] == pytest.approx([values[a:b].mean() for a, b in bins])
    assert binned["scores"] == pytest.approx([raw[a:b].sum() for a, b in bins])
    assert sum(binned["scores"]) == pytest.approx(raw.sum())
    two = series.series_field(np.stack([values, -values]), np.stack([raw, 2 * raw]))
    assert isinstance(two, list) and two[1]["scores"] == (2 * raw).tolist()


def test_report_of_a_series_run_plots_each_record(capsys, audio, tmp_path):
    _, path, inputs = audio
    page = tmp_path / "report.html"
    code, lines, err = run_cli(capsys, path, inputs["npy"][0], inputs["wav"][0], "-m",
                               "gradient,integrated-gradients", "--report", page)
    assert code == 0, err
    assert len(lines) == 4
    for line in lines:
        assert len(line["series"]["values"]) == LENGTH == len(line["series"]["scores"])
    raw = np.load(inputs["npy"][0])
    assert lines[0]["series"]["values"] == pytest.approx(raw[0].tolist(), abs=1e-6)
    html = page.read_text()
    assert html.count('class="chart series"') == 4
    assert html.count('<section class="row"') == 2
