"""Make the README's pictures for tables, series, text and LIME/KernelSHAP on images:
docs/modalities/*.png. Each comes from `onnxpath attribute` on a small model:

- image: the demo model on models/samples/heart_0.png, LIME, KernelSHAP and IG side by side;
- table: the committed skl2onnx MLP (tests/io/data) on the first row of customers.csv, IG;
- series: a 1-D CNN trained here for a few seconds to tell a 440 Hz burst from noise, on a
  .wav with one burst, IG;
- text: the BERT-like test model trained here for a few seconds on templated sentiment
  sentences, on raw text with a tokenizer.json, input × gradient.

    python docs/make_modality_figures.py      (torch and tokenizers: the test extras)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import warnings
import wave
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "modalities"


def cli(*args) -> None:
    subprocess.run([sys.executable, "-m", "onnxpath", "attribute", *map(str, args),
                    "--no-cache", "-q"], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def image(work: Path) -> None:
    cli(ROOT / "models" / "shapes_resnet.onnx", ROOT / "models" / "samples" / "heart_0.png",
        "-m", "lime,kernel-shap,integrated-gradients", "--segments", "slic:60", "--samples",
        "1000", "--side-by-side", "-o", work / "image")
    shutil.copy(work / "image" / "heart_0.side-by-side.png", OUT / "image_lime_shap.png")


def table(work: Path) -> None:
    cli(ROOT / "tests" / "io" / "data" / "mlp_classifier.onnx",
        ROOT / "tests" / "io" / "data" / "customers.csv", "-m", "integrated-gradients",
        "-o", work / "table")
    shutil.copy(work / "table" / "customers.row0.integrated-gradients.png", OUT / "table.png")


def series(work: Path) -> None:
    from tests.io.test_series import AudioNet
    rate, length = 8000, 256
    rng = np.random.default_rng(0)
    t = np.arange(length) / rate

    def batch(n):
        x = 0.2 * rng.standard_normal((n, 1, length))
        y = rng.integers(0, 2, n)
        for i in np.flatnonzero(y):
            start = rng.integers(0, length - 64)
            x[i, 0, start:start + 64] += np.sin(2 * np.pi * 440 * t[:64]) * np.hanning(64)
        return torch.tensor(x, dtype=torch.float32), torch.tensor(y)

    torch.manual_seed(0)
    model = AudioNet()
    model.classifier[-1] = torch.nn.Linear(16, 2)
    optimiser = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(300):
        x, y = batch(64)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    path = work / "audio.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 1, length),), str(path), dynamo=False,
                          opset_version=17, input_names=["signal"], output_names=["logits"],
                          dynamic_axes={"signal": {0: "batch"}, "logits": {0: "batch"}})
    signal = 0.2 * rng.standard_normal(length)
    signal[150:214] += np.sin(2 * np.pi * 440 * t[:64]) * np.hanning(64)
    wav = work / "burst.wav"
    with wave.open(str(wav), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(np.round(np.clip(signal, -1, 1) * 32767).astype(np.int16).tobytes())
    cli(path, wav, "-m", "integrated-gradients", "--target", "1", "-o", work / "series")
    shutil.copy(work / "series" / "burst.integrated-gradients.png", OUT / "series.png")


def text(work: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    from tests.io.text_models import build, export
    vocabulary = "the a movie film plot acting was is really very not good great bad awful"
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", *vocabulary.split()]
    vocab = {w: i for i, w in enumerate(words)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer.save(str(work / "tokenizer.json"))
    rng = np.random.default_rng(0)
    positive, negative = ["good", "great"], ["bad", "awful"]

    def sentence():
        label = int(rng.integers(0, 2))
        word = rng.choice(positive if label else negative)
        if rng.random() < 0.3:
            word, label = f"not {word}", 1 - label
        subject = f"{rng.choice(['the', 'a'])} {rng.choice(['movie', 'film', 'plot', 'acting'])}"
        adverb = rng.choice(["", "really ", "very "])
        return f"{subject} {rng.choice(['was', 'is'])} {adverb}{word}", label

    torch.manual_seed(0)
    model = build()
    optimiser = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(400):
        pairs = [sentence() for _ in range(32)]
        encoded = [tokenizer.encode(s).ids for s, _ in pairs]
        length = max(map(len, encoded))
        ids = torch.tensor([e + [0] * (length - len(e)) for e in encoded])
        mask = (ids != 0).long()
        logits = model(ids, mask, torch.zeros_like(ids))[:, :2]
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor([y for _, y in pairs]))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    path = export(model, work / "sentiment.onnx")
    cli(path, "--text", "the acting was really not good", "--tokenizer",
        work / "tokenizer.json", "-m", "input-x-gradient", "--target", "0", "-o",
        work / "text")
    shutil.copy(work / "text" / "text.input-x-gradient.png", OUT / "text.png")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        for make in (image, table, series, text):
            make(work)
            print(f"wrote {make.__name__}")


if __name__ == "__main__":
    main()
