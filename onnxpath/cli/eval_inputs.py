"""What `onnxpath evaluate` runs on: image files with their ground-truth masks (`--truth DIR`),
or generated shapes scenes (`--scenes N`), as model-space tensors."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from onnxpath.errors import InputError, UsageError
from onnxpath.evaluate.localisation import shapes_scenes
from onnxpath.explainer import Explainer
from onnxpath.io.image import load_input, model_size, to_tensor
from onnxpath.io.inputs import expand_inputs
from onnxpath.io.preprocess import IMAGE_SUFFIXES, Preprocess


def find_mask(directory: Path, stem: str) -> Path:
    for suffix in (".png", ".npy", *sorted(IMAGE_SUFFIXES)):
        candidate = directory / f"{stem}{suffix}"
        if candidate.exists():
            return candidate
    raise InputError(f"no mask for '{stem}' in {directory} (looked for {stem}.png, .npy, ...)")


def load_mask(path: Path, prep: Preprocess, input_shape: tuple) -> np.ndarray:
    """A bool H×W mask, put through the same resize/crop as its image."""
    if path.suffix.lower() == ".npy":
        mask = np.load(path, allow_pickle=False)
        return np.asarray(mask).squeeze() > 0
    size, _ = model_size(input_shape, prep, prep.layout)
    gray = replace(prep, mean=(0.0,), std=(1.0,), scale=1.0, bgr=False, gray=True,
                   layout="nchw")
    with Image.open(path) as img:
        tensor, _ = to_tensor(img.convert("L"), gray, size, 1)
    return tensor[0] > 127.5


def scene_inputs(explainer: Explainer, prep: Preprocess, count: int, seed: int):
    images, _, masks = shapes_scenes(count, seed)
    size, channels = model_size(explainer.input_shape, prep, prep.layout)
    x = np.stack([to_tensor(Image.fromarray(img), prep, size, channels)[0] for img in images])
    if masks.shape[1:] != tuple(size):
        masks = np.stack([np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize(
            (size[1], size[0]), Image.Resampling.NEAREST)) > 127 for m in masks])
    return x, masks


def file_inputs(explainer: Explainer, prep: Preprocess, items: list[str],
                masks_dir: Path | None):
    paths = expand_inputs(items)
    if masks_dir is not None:
        masks_root = masks_dir.resolve()
        paths = [p for p in paths if masks_root not in p.resolve().parents]
    if not paths:
        raise UsageError("no inputs found")
    tensors, masks, failures = [], [], 0
    for path in paths:
        try:
            x, _ = load_input(path, explainer.input_shape, prep)
            mask = None
            if masks_dir is not None:
                mask = load_mask(find_mask(masks_dir, path.stem), prep, explainer.input_shape)
                if mask.shape != x.shape[-2:]:
                    raise InputError(f"{path}: mask shape {mask.shape} differs from the "
                                     f"input's {x.shape[-2:]}")
        except InputError as err:
            failures += 1
            print(f"onnxpath: skipped: {err}", file=sys.stderr)
            continue
        tensors.append(x)
        masks.append(mask)
    if not tensors:
        raise UsageError("none of the inputs could be read")
    return (np.stack(tensors), np.stack(masks) if masks_dir is not None else None, failures)
