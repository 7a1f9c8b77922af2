"""What several commands share: parsing option values, the preprocessing recipe, JSON lines."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from onnxpath.errors import UsageError
from onnxpath.explainer import Explainer
from onnxpath.io.image import load_input, model_size
from onnxpath.io.preprocess import Preprocess, guess_layout, resolve_preprocess
from onnxpath.io.tensors import load_npz


def parse_floats(text: str | None, option: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError as err:
        raise UsageError(f"{option} takes comma-separated numbers, got '{text}'") from err


def parse_size(text: str | None, option: str = "--size") -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.lower().replace(",", "x").split("x")
    try:
        h, w = (int(parts[0]), int(parts[-1]))
    except ValueError as err:
        raise UsageError(f"{option} takes HxW (e.g. 224x224), got '{text}'") from err
    if h < 1 or w < 1:
        raise UsageError(f"{option} must be positive, got '{text}'")
    return h, w


def check_size_fits(input_shape, size: tuple[int, int] | None) -> None:
    """--size where no image is read (inspect, export, a random check-grad input): it sets
    the model's dynamic spatial dims, so on a model whose dims are fixed it must be those, as
    attribute says, never quietly ignored."""
    if size is not None and len(input_shape) == 4:
        model_size(tuple(input_shape), replace(Preprocess(), size=size),
                   guess_layout(tuple(input_shape)))


def parse_scale(text: str | None) -> float | None:
    """A number or a fraction: 0.00392, 1/255, 2/255."""
    if text is None:
        return None
    try:
        return float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError) as err:
        raise UsageError(f"--scale takes a number or a fraction (e.g. 1/255), got '{text}'") \
            from err


def build_preprocess(explainer: Explainer, preset: str | None, size=None, mean=None, std=None,
                     *, config=None, resize: int | None = None, crop: bool | None = None,
                     scale: float | None = None, bgr: bool | None = None,
                     layout: str | None = None, gray: bool | None = None) -> Preprocess:
    """The model's recipe with the user's preset, JSON file and flags applied, in that order."""
    if resize is not None and resize < 0:
        raise UsageError(f"--resize must be 0 (no crop) or positive, got {resize}")
    return resolve_preprocess(explainer.input_shape, explainer.proto, preset, config,
                              size=size, mean=mean, std=std, resize=resize, crop=crop,
                              scale=scale, bgr=bgr, layout=layout, gray=gray)


def parse_index(text: str | None) -> tuple[int, ...] | None:
    """`--target-index i,j,...`: one element of the output, per example (no batch index)."""
    if text is None:
        return None
    try:
        index = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError as err:
        raise UsageError(f"--target-index takes comma-separated integers, e.g. 3,10,12; got "
                         f"'{text}'") from err
    if any(i < 0 for i in index):
        raise UsageError(f"--target-index takes non-negative integers, got '{text}'")
    return index


def read_region(path: Path | None) -> np.ndarray | None:
    """`--region mask.png` (pixels brighter than mid-gray) or a `.npy` (non-zero): an H×W bool
    mask, resampled to the output's size later."""
    if path is None:
        return None
    try:
        if path.suffix.lower() == ".npy":
            mask = np.asarray(np.load(path, allow_pickle=False)).squeeze() != 0
        else:
            with Image.open(path) as img:
                mask = np.asarray(img.convert("L")) > 127
    except Exception as err:
        raise UsageError(f"cannot read --region {path} as a mask image or .npy "
                         f"({type(err).__name__})") from err
    if mask.ndim != 2 or not mask.any():
        raise UsageError(f"--region {path} must be a 2-D mask with at least one pixel set")
    return mask


def make_explainer(model: Path, *, device: str = "cpu", threads: int | None = None,
                   cache: bool = True, keep_probabilities: bool = False,
                   output: str | None = None, wrt: str | None = None,
                   target_index: str | None = None, region: Path | None = None,
                   provider_options: dict[str, str] | None = None,
                   precision: str | None = None) -> Explainer:
    """The Explainer with the model-intake choices every command shares (--output, --wrt,
    --target-index, --region)."""
    return Explainer(model, device=device, threads=threads, cache=cache,
                     keep_probabilities=keep_probabilities, output=output, wrt=wrt,
                     target_index=parse_index(target_index), region=read_region(region),
                     provider_options=provider_options, precision=precision)


def load_example(explainer: Explainer, path: Path, prep: Preprocess):
    """One example for the single-input commands (pathway, check-grad): an image or `.npy`
    for the model's input, or an `.npz` of arrays by input name."""
    if Path(path).suffix.lower() == ".npz":
        return load_npz(path, explainer.inputs)
    return load_input(path, explainer.input_shape, prep)[0]
