"""Make the pictures of docs/modalities.md: docs/modalities/*.png. Each is the `--out` picture of
the first command in its section there, run on the shipped files:

- image: the demo model on models/samples/heart_0.png, LIME, KernelSHAP and IG side by side;
- table: the churn classifier (models/examples/churn.onnx) on the first row of customers.csv, IG;
- series: the tone-burst detector (models/examples/audio.onnx) on burst.wav, IG;
- text: the BERT-like sentiment classifier (models/examples/sentiment.onnx) on raw text with its
  tokenizer.json, IG.

    python docs/make_modality_figures.py      (tokenizers, for the text picture)

The models are built by models/build_examples.py.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "modalities"
EXAMPLES = "models/examples"

# (picture, the command's arguments after `onnxpath attribute`, the --out file it becomes)
FIGURES = [
    ("image_lime_shap.png", ["models/shapes_resnet.onnx", "models/samples/heart_0.png",
                             "-m", "lime,kernel-shap,integrated-gradients", "--segments",
                             "slic:60", "--side-by-side"], "heart_0.side-by-side.png"),
    ("table.png", [f"{EXAMPLES}/churn.onnx", f"{EXAMPLES}/customers.csv",
                   "-m", "integrated-gradients"], "customers.row0.integrated-gradients.png"),
    ("series.png", [f"{EXAMPLES}/audio.onnx", f"{EXAMPLES}/burst.wav",
                    "-m", "integrated-gradients"], "burst.integrated-gradients.png"),
    ("text.png", [f"{EXAMPLES}/sentiment.onnx", "--text", "the acting was not good",
                  "--tokenizer", f"{EXAMPLES}/tokenizer.json", "-m", "integrated-gradients"],
     "text.integrated-gradients.png"),
]


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        for picture, arguments, made in FIGURES:
            out = Path(folder) / Path(picture).stem
            subprocess.run([sys.executable, "-m", "onnxpath", "attribute", *arguments,
                            "-o", str(out), "--no-cache", "-q"], check=True, cwd=ROOT,
                           stdout=subprocess.DEVNULL)
            shutil.copy(out / made, OUT / picture)
            print(f"wrote docs/modalities/{picture}")


if __name__ == "__main__":
    main()
