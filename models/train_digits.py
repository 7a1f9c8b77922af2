"""Train and export a second real model: a small ReLU CNN on scikit-learn's handwritten digits.

    pip install scikit-learn          # build-time only: the digits come with it
    python models/train_digits.py     # a few minutes on 1 CPU thread

The data are the 1,797 8×8 digits (UCI optical recognition of handwritten digits, 16 grey
levels) bundled with scikit-learn (`sklearn.datasets.load_digits`). Each digit becomes an 8-bit
grey PNG (value × 255 / 16) and the model sees it as onnxpath does: bilinear resize to 32×32,
scale to [0, 1], minus the training mean, over the training std. A fixed split (seed 0) keeps
597 digits out of training.

Writes, next to this file:
  digits_cnn.onnx          logits model, input float32 [N,1,32,32]; preprocessing and labels
                           in its metadata (no flags needed)
  digits_heldout.npz       the held-out digits: `images` uint8 [597,8,8], `labels` int64
  digits/<label>_<i>.png   two held-out digits per class, as a user would pass them
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from PIL import Image
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from onnxpath.io.image import to_tensor  # noqa: E402
from onnxpath.io.preprocess import from_json  # noqa: E402

SEED = 0
HELDOUT = 597
SIZE = 32


class DigitsCNN(nn.Module):
    """conv-BN-ReLU ×2, pool, conv-BN-ReLU ×2, pool, conv-BN-ReLU, global average pool, linear
    (BatchNorm is folded into the convolutions on export); every nn.ReLU is used once."""

    def __init__(self) -> None:
        super().__init__()
        widths = (1, 16, 16, 32, 32, 64)
        layers: list[nn.Module] = []
        for i in range(5):
            layers += [nn.Conv2d(widths[i], widths[i + 1], 3, padding=1),
                       nn.BatchNorm2d(widths[i + 1]), nn.ReLU()]
            if i in (1, 3):
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def to_uint8(digits: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(digits * 255.0 / 16.0), 0, 255).astype(np.uint8)


def tensors(images: np.ndarray, prep) -> np.ndarray:
    return np.stack([to_tensor(Image.fromarray(im, "L"), prep, (SIZE, SIZE), 1)[0]
                     for im in images])


def split(n: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(SEED).permutation(n)
    return order[HELDOUT:], order[:HELDOUT]


def shift_augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random shifts of up to 2 px (of 32), zero-filled in [0, 1] space before normalising."""
    out = torch.zeros_like(x)
    dy, dx = (int(v) for v in torch.randint(-2, 3, (2,), generator=gen))
    src = x[..., max(0, -dy):SIZE - max(0, dy), max(0, -dx):SIZE - max(0, dx)]
    out[..., max(0, dy):max(0, dy) + src.shape[-2], max(0, dx):max(0, dx) + src.shape[-1]] = src
    return out


def export(model: nn.Module, path: Path, preprocess: dict) -> None:
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, torch.zeros(1, 1, SIZE, SIZE), str(path), dynamo=False,
                          opset_version=17, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in {"onnxpath.preprocess": json.dumps(preprocess),
                       "onnxpath.labels": json.dumps([str(d) for d in range(10)]),
                       "onnxpath.output": "logits"}.items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = ("ReLU CNN on scikit-learn's 8x8 digits (models/train_digits.py). Input "
                        "float32 [N,1,32,32]: grey PNG, bilinear to 32x32, /255, then "
                        "(x - mean) / std from the metadata; output logits [N,10].")
    proto.producer_name = "onnxpath models/train_digits.py"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    from sklearn.datasets import load_digits

    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    start = time.time()
    data = load_digits()
    images = to_uint8(data.images)
    labels = data.target.astype(np.int64)
    train, held = split(len(images))
    plain = from_json({"size": [SIZE, SIZE], "resize": [SIZE, SIZE], "scale": 1 / 255,
                       "mean": [0.0], "std": [1.0], "gray": True})
    x01 = tensors(images[train], plain)
    mean, std = float(x01.mean()), float(x01.std())
    preprocess = {"size": [SIZE, SIZE], "resize": [SIZE, SIZE], "crop": None,
                  "scale": 1 / 255, "mean": [round(mean, 6)], "std": [round(std, 6)],
                  "gray": True, "layout": "nchw"}
    prep = from_json(preprocess)
    x_train = torch.from_numpy(x01)
    y_train = torch.from_numpy(labels[train])
    x_held = torch.from_numpy(tensors(images[held], prep))
    y_held = torch.from_numpy(labels[held])

    model = DigitsCNN()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    batch = 64
    steps = -(-len(train) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=args.epochs * steps)
    gen = torch.Generator().manual_seed(SEED)
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(train), generator=gen)
        for s in range(steps):
            idx = order[s * batch:(s + 1) * batch]
            xb = (shift_augment(x_train[idx], gen) - mean) / std
            loss = nn.functional.cross_entropy(model(xb), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if (epoch + 1) % 5 == 0 or epoch + 1 == args.epochs:
            model.eval()
            with torch.no_grad():
                acc = (model(x_held).argmax(1) == y_held).float().mean().item()
            print(f"epoch {epoch + 1}: held-out accuracy {acc:.4f} ({time.time() - start:.0f} s)",
                  flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out / "digits_cnn.onnx"
    export(model, onnx_path, preprocess)
    np.savez_compressed(args.out / "digits_heldout.npz", images=images[held],
                        labels=labels[held])
    samples = args.out / "digits"
    samples.mkdir(exist_ok=True)
    for digit in range(10):
        for k, i in enumerate(np.flatnonzero(labels[held] == digit)[:2]):
            Image.fromarray(images[held][i], "L").save(samples / f"{digit}_{k}.png")
    print(f"held-out accuracy ({HELDOUT} digits): {acc:.4f}; "
          f"{sum(p.numel() for p in model.parameters())} parameters; "
          f"{time.time() - start:.0f} s; wrote {onnx_path}")


if __name__ == "__main__":
    main()
