"""Options that several commands share, declared once so their flags and help stay the same."""

from __future__ import annotations

import typer

from onnxpath.io.preprocess import PRESETS

PRESET = typer.Option(None, "--preset", help=f"Preprocessing preset: {', '.join(PRESETS)} "
                      "(default: the model's metadata, else imagenet for 3x224x224 inputs, "
                      "else none).")
SIZE = typer.Option(None, "--size", help="Model input size HxW, e.g. 224x224.")
MEAN = typer.Option(None, "--mean", help="Per-channel mean, e.g. 0.485,0.456,0.406.")
STD = typer.Option(None, "--std", help="Per-channel std, e.g. 0.229,0.224,0.225.")
PREPROCESS = typer.Option(None, "--preprocess", help="Preprocessing JSON, e.g. a Hugging Face "
                          "preprocessor_config.json.")
RESIZE = typer.Option(None, "--resize", help="Shorter side before the center crop, e.g. 256; "
                      "0 squashes the image to --size.")
CROP = typer.Option(None, "--crop/--no-crop", help="Center-crop after --resize.")
SCALE = typer.Option(None, "--scale", help="Pixel scale before mean/std, e.g. 1/255 or 1.")
BGR = typer.Option(None, "--bgr/--rgb", help="Channel order the model expects.")
LAYOUT = typer.Option(None, "--layout", help="nchw or nhwc (default: guessed from the input "
                      "shape).")
GRAY = typer.Option(None, "--gray", help="Convert images to grayscale.")
