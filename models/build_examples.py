"""Build models/examples/: three small models, each trained here for a few seconds on a toy task,
and inputs to explain with them, for the README's tables, series and text examples.

- table: `churn.onnx`, a ReLU MLP (6 features -> stays/churns) that learnt a fixed rule:
  a customer churns when 0.9·support_calls + 1.2·late_payments − 0.06·tenure_months
  − contract_years > 1; age and monthly_charge play no part. The standardisation is inside the
  graph, so the inputs are raw values: `customers.csv` (header + 5 rows), the same rows as
  `customers.npy` and their names in `features.txt` (for `--features`).
- series: `audio.onnx`, a ReLU 1-D CNN (1×256 samples at 8 kHz -> noise/tone) that tells a
  64-sample 440 Hz burst from noise; `sample_rate` 8000 in its metadata. `burst.wav` (16-bit
  mono, a burst at samples 150–213) and `burst.npy` (the same signal, float32 1×256).
- text: `sentiment.onnx`, a one-layer BERT-like encoder (word, position and token-type
  embeddings, masked self-attention, GELU feed-forward, tanh pooler; int64 input_ids,
  attention_mask, token_type_ids -> negative/positive) trained on templated reviews with
  negation ("was not good" is negative); `tokenizer.json`, a word-level Hugging Face tokenizer
  over its 38-word vocabulary ([CLS] … [SEP]); `reviews.txt` and `reviews.jsonl`, a few
  sentences.
- image: `heart_0.npy`, `samples/heart_0.png` as the demo model `shapes_resnet.onnx` takes it
  (float32 3×64×64: /255, then the ImageNet mean and std), for `.npy` inputs and the Python API.

Labels travel in each model's `onnxpath.labels` metadata. Seeds and threads (1) are fixed:
two runs give byte-identical files. Needs torch and tokenizers (the test extras):

    python models/build_examples.py        # about 15 s on one CPU thread
"""

from __future__ import annotations

import json
import math
import warnings
import wave
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

OUT = Path(__file__).resolve().parent / "examples"


def export(model: nn.Module, args: tuple, path: Path, inputs: list[str], dynamic: dict,
           metadata: dict[str, str]) -> None:
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, str(path), dynamo=False, opset_version=17,
                          input_names=inputs, output_names=["logits"],
                          dynamic_axes={**dynamic, "logits": {0: "batch"}})
    proto = onnx.load(path)
    onnx.helper.set_model_props(proto, metadata)
    proto.producer_name, proto.producer_version = "onnxpath models/build_examples.py", "1"
    onnx.checker.check_model(proto)
    onnx.save(proto, path)


def fit(model: nn.Module, batch, steps: int, lr: float = 3e-3, penalty=None) -> float:
    """Adam on fresh batches (plus `penalty(model)` in the loss); returns the accuracy on one
    last fresh batch."""
    optimiser = torch.optim.Adam(model.parameters(), lr)
    model.train()
    for _ in range(steps):
        x, y = batch()
        loss = nn.functional.cross_entropy(model(*x), y)
        if penalty is not None:
            loss = loss + penalty(model)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    x, y = batch()
    with torch.no_grad():
        return float((model(*x).argmax(1) == y).float().mean())


# ---------------------------------------------------------------------------------------------
# Table

FEATURES = ["age", "tenure_months", "monthly_charge", "support_calls", "late_payments",
            "contract_years"]


def customers(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.stack([rng.integers(18, 80, n), rng.integers(1, 72, n),
                  np.round(rng.uniform(15, 120, n), 2), rng.poisson(1.5, n),
                  rng.poisson(0.7, n), rng.integers(0, 3, n)], axis=1).astype(np.float32)
    risk = 0.9 * x[:, 3] + 1.2 * x[:, 4] - 0.06 * x[:, 1] - x[:, 5]
    return x, (risk > 1).astype(np.int64)


class ChurnNet(nn.Module):
    def __init__(self, mean: np.ndarray, std: np.ndarray):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))
        self.layers = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                                    nn.Linear(16, 2))

    def forward(self, x):
        return self.layers((x - self.mean) / self.std)


def table(rng: np.random.Generator) -> str:
    x, _ = customers(rng, 4000)
    model = ChurnNet(x.mean(0), x.std(0))

    def batch():
        x, y = customers(rng, 256)
        return (torch.tensor(x),), torch.tensor(y)

    accuracy = fit(model, batch, 400)
    export(model, (torch.zeros(1, 6),), OUT / "churn.onnx", ["customer"],
           {"customer": {0: "batch"}}, {"onnxpath.labels": json.dumps(["stays", "churns"])})
    rows = np.array([[34, 3, 89.5, 4, 2, 0],     # churns: many calls, late payments, new
                     [61, 58, 45.0, 0, 0, 2],    # stays: long tenure, two-year contract
                     [27, 12, 99.9, 2, 1, 0],    # churns
                     [45, 30, 20.0, 1, 0, 1],    # stays
                     [52, 6, 70.0, 3, 0, 1]], dtype=np.float32)  # churns, narrowly
    lines = [",".join(FEATURES)] + [",".join(f"{v:g}" for v in row) for row in rows]
    (OUT / "customers.csv").write_text("\n".join(lines) + "\n")
    np.save(OUT / "customers.npy", rows)
    (OUT / "features.txt").write_text("\n".join(FEATURES) + "\n")
    return f"table: churn.onnx, held-out accuracy {accuracy:.3f}"


# ---------------------------------------------------------------------------------------------
# Series

RATE, LENGTH, BURST = 8000, 256, 64


def tone_burst() -> np.ndarray:
    t = np.arange(BURST) / RATE
    return np.sin(2 * np.pi * 440 * t) * np.hanning(BURST)


class AudioNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, 8, 9, padding=4), nn.ReLU(), nn.MaxPool1d(4),
            nn.Conv1d(8, 16, 5, padding=2), nn.ReLU(), nn.AdaptiveAvgPool1d(1))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.ReLU(),
                                        nn.Linear(16, 2))

    def forward(self, x):
        return self.classifier(self.features(x))


def series(rng: np.random.Generator) -> str:
    def batch():
        x = 0.2 * rng.standard_normal((64, 1, LENGTH))
        y = rng.integers(0, 2, 64)
        for i in np.flatnonzero(y):
            start = rng.integers(0, LENGTH - BURST)
            x[i, 0, start:start + BURST] += tone_burst()
        return (torch.tensor(x, dtype=torch.float32),), torch.tensor(y)

    model = AudioNet()
    accuracy = fit(model, batch, 300)
    export(model, (torch.zeros(1, 1, LENGTH),), OUT / "audio.onnx", ["signal"],
           {"signal": {0: "batch"}},
           {"sample_rate": str(RATE), "onnxpath.labels": json.dumps(["noise", "tone"])})
    signal = 0.2 * rng.standard_normal(LENGTH)
    signal[150:150 + BURST] += tone_burst()
    pcm = np.round(np.clip(signal, -1, 1) * 32767).astype(np.int16)
    with wave.open(str(OUT / "burst.wav"), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(RATE)
        handle.writeframes(pcm.tobytes())
    np.save(OUT / "burst.npy", (pcm / 32768.0).astype(np.float32)[None])
    return f"series: audio.onnx, held-out accuracy {accuracy:.3f}"


# ---------------------------------------------------------------------------------------------
# Text

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
SUBJECTS = ["movie", "film", "plot", "acting", "story", "music", "ending", "cast"]
POSITIVE = ["good", "great", "wonderful", "fun", "moving"]
NEGATIVE = ["bad", "awful", "boring", "dull", "weak"]
OTHER = ["the", "a", "this", "was", "is", "really", "very", "quite", "not", "and", "but",
         "i", "liked", "hated", "it", "."]
WORDS = SPECIAL + SUBJECTS + POSITIVE + NEGATIVE + OTHER
DIM, HEADS, MAX_LEN = 16, 2, 32
REVIEWS = ["the acting was really not good", "the film was very good", "the plot is boring",
           "the plot was dull but the acting was great", "this movie is not bad"]


def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    vocab = {w: i for i, w in enumerate(WORDS)}
    made = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    made.pre_tokenizer = pre_tokenizers.Whitespace()
    made.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return made


def review(rng: np.random.Generator) -> tuple[str, int]:
    """A templated review and its label (1 positive), with negation and a 'but' clause."""
    def clause():
        label = int(rng.integers(0, 2))
        word = str(rng.choice(POSITIVE if label else NEGATIVE))
        if rng.random() < 0.3:
            word, label = f"not {word}", 1 - label
        adverb = str(rng.choice(["", "really ", "very ", "quite "]))
        subject = f"{rng.choice(['the', 'a', 'this'])} {rng.choice(SUBJECTS)}"
        return f"{subject} {rng.choice(['was', 'is'])} {adverb}{word}", label

    first, label = clause()
    roll = rng.random()
    if roll < 0.2:
        liked = int(rng.integers(0, 2))
        return f"i {'liked' if liked else 'hated'} it", liked
    if roll < 0.4:  # "X but Y": the second clause decides
        second, label = clause()
        return f"{first} but {second}", label
    if roll < 0.5:
        second, other = clause()
        if other == label:
            return f"{first} and {second}", label
    return first, label


class TinyBert(nn.Module):
    def __init__(self):
        super().__init__()
        self.word = nn.Embedding(len(WORDS), DIM)
        self.position = nn.Embedding(MAX_LEN, DIM)
        self.token_type = nn.Embedding(2, DIM)
        self.norm = nn.LayerNorm(DIM)
        self.qkv, self.out = nn.Linear(DIM, 3 * DIM), nn.Linear(DIM, DIM)
        self.norm1, self.norm2 = nn.LayerNorm(DIM), nn.LayerNorm(DIM)
        self.ff = nn.Sequential(nn.Linear(DIM, 2 * DIM), nn.GELU(), nn.Linear(2 * DIM, DIM))
        self.pooler, self.classifier = nn.Linear(DIM, DIM), nn.Linear(DIM, 2)

    def forward(self, input_ids, attention_mask, token_type_ids):
        n, t = input_ids.shape
        positions = torch.arange(t)[None]
        h = self.norm(self.word(input_ids) + self.position(positions)
                      + self.token_type(token_type_ids))
        bias = (1.0 - attention_mask[:, None, None, :].to(h.dtype)) * -10000.0
        q, k, v = self.qkv(h).reshape(n, t, 3, HEADS, DIM // HEADS).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(DIM // HEADS) + bias
        context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, t, DIM)
        h = self.norm1(h + self.out(context))
        h = self.norm2(h + self.ff(h))
        return self.classifier(torch.tanh(self.pooler(h[:, 0])))


def text(rng: np.random.Generator) -> str:
    tok = tokenizer()

    def batch():
        pairs = [review(rng) for _ in range(64)]
        encoded = [tok.encode(s).ids for s, _ in pairs]
        length = max(map(len, encoded))
        ids = torch.tensor([e + [0] * (length - len(e)) for e in encoded])
        mask = (ids != 0).long()
        return (ids, mask, torch.zeros_like(ids)), torch.tensor([y for _, y in pairs])

    def neutral(model):
        """No evidence, no preference: all-[PAD] inputs (the attribution baseline) towards
        logits 0, so that integrated gradients from it add up to the logit itself, and
        reviews without a sentiment word ("the plot was really") towards equal logits, so that
        positive words carry evidence as negative ones do."""
        pads = torch.zeros(8, int(rng.integers(3, 14)), dtype=torch.long)
        plain = [f"{rng.choice(['the', 'a', 'this'])} {rng.choice(SUBJECTS)} "
                 f"{rng.choice(['was', 'is'])}{rng.choice(['', ' really', ' very', ' quite'])}"
                 for _ in range(16)]
        encoded = [tok.encode(s).ids for s in plain]
        length = max(map(len, encoded))
        ids = torch.tensor([e + [0] * (length - len(e)) for e in encoded])
        logits = model(ids, (ids != 0).long(), torch.zeros_like(ids))
        return (model(pads, torch.ones_like(pads), pads).pow(2).mean()
                + (logits[:, 1] - logits[:, 0]).pow(2).mean())

    model = TinyBert()
    accuracy = fit(model, batch, 1000, penalty=neutral)
    ids = torch.ones(1, 8, dtype=torch.long)
    dynamic = {0: "batch", 1: "sequence"}
    export(model, (ids, torch.ones_like(ids), torch.zeros_like(ids)), OUT / "sentiment.onnx",
           ["input_ids", "attention_mask", "token_type_ids"],
           {"input_ids": dynamic, "attention_mask": dynamic, "token_type_ids": dynamic},
           {"onnxpath.labels": json.dumps(["negative", "positive"])})
    tok.save(str(OUT / "tokenizer.json"))
    (OUT / "reviews.txt").write_text("\n".join(REVIEWS) + "\n")
    (OUT / "reviews.jsonl").write_text("".join(json.dumps({"text": r}) + "\n" for r in REVIEWS))
    return f"text: sentiment.onnx, held-out accuracy {accuracy:.3f}"


# ---------------------------------------------------------------------------------------------
# Image tensor


def image(rng: np.random.Generator) -> str:
    from PIL import Image
    prep = json.loads((OUT.parent / "shapes_preprocess.json").read_text())
    pixels = np.asarray(Image.open(OUT.parent / "samples" / "heart_0.png").convert("RGB"))
    x = (pixels * prep["rescale_factor"] - np.array(prep["image_mean"])) / prep["image_std"]
    np.save(OUT / "heart_0.npy", x.transpose(2, 0, 1).astype(np.float32))
    return "image: heart_0.npy"


def main() -> None:
    torch.set_num_threads(1)
    OUT.mkdir(exist_ok=True)
    for seed, build in enumerate((table, series, text, image)):
        torch.manual_seed(seed)
        print(build(np.random.default_rng(seed)))


if __name__ == "__main__":
    main()
