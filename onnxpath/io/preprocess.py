"""The preprocessing recipe that turns an image into the model's input space: presets, the
model's own metadata, a JSON file and flags, resolved in that order."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import onnx
from PIL import Image

from onnxpath.errors import UsageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes a tensor: resize, crop, scale, normalise, lay out."""

    size: tuple[int, int] | None = None  # (H, W) fed to the model; None: the model's own
    resize: int | None = None  # shorter side before the crop; None: resize straight to size
    crop: bool = False  # center-crop `size` after resizing the shorter side
    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    bgr: bool = False
    layout: str = "nchw"
    gray: bool = False
    resample: str = "bilinear"  # Pillow filter for every resize: bilinear, bicubic, ...


RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
            "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
            "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING}
# Hugging Face's `resample` is Pillow's integer code (2 bilinear, 3 bicubic).
RESAMPLE_CODES = {int(v): k for k, v in RESAMPLE.items()}


def resample_name(value) -> str:
    """A resampling filter by name or by Pillow's integer code."""
    if isinstance(value, bool):
        raise ValueError(f"resample must be a filter name or code, got {value!r}")
    if isinstance(value, int):
        if value not in RESAMPLE_CODES:
            raise ValueError(f"unknown resample code {value}")
        return RESAMPLE_CODES[value]
    name = str(value).lower()
    if name not in RESAMPLE:
        raise ValueError(f"unknown resample '{value}'; choose from {', '.join(RESAMPLE)}")
    return name


PRESETS = {
    "imagenet": Preprocess(size=(224, 224), resize=256, crop=True, mean=IMAGENET_MEAN,
                           std=IMAGENET_STD),
    "inception": Preprocess(scale=2 / 255, mean=(1.0, 1.0, 1.0)),  # [0,255] -> [-1,1]
    "caffe": Preprocess(scale=1.0, mean=(103.94, 116.78, 123.68), bgr=True),
    "none": Preprocess(),
}
# ONNX's image metadata (onnx/docs/MetadataProps.md): pixel order and nominal range.
PIXEL_FORMATS = {"Gray8": {"gray": True}, "Rgb8": {"bgr": False}, "Bgr8": {"bgr": True},
                 "Rgba8": {"bgr": False}, "Bgra8": {"bgr": True}}
PIXEL_RANGES = {  # x in [0, 255] -> (x * scale - mean) / 1
    "NominalRange_0_255": {"scale": 1.0, "mean": (0.0,) * 3},
    "Normalized_0_1": {"scale": 1 / 255, "mean": (0.0,) * 3},
    "Normalized_1_1": {"scale": 2 / 255, "mean": (1.0,) * 3},
    "NominalRange_16_235": {"scale": 219 / 255, "mean": (-16.0,) * 3},
}


def guess_layout(input_shape: tuple) -> str:
    """nhwc when the last dim looks like channels and the second does not (TF exports)."""
    if len(input_shape) == 4 and input_shape[3] in (1, 3, 4) and input_shape[1] not in (1, 3, 4):
        return "nhwc"
    return "nchw"


def metadata_hints(model: onnx.ModelProto | None) -> dict:
    """Preprocess fields from `Image.BitmapPixelFormat` and `Image.NominalPixelRange`."""
    props = {p.key: p.value for p in model.metadata_props} if model is not None else {}
    hints = {**PIXEL_FORMATS.get(props.get("Image.BitmapPixelFormat", ""), {}),
             **PIXEL_RANGES.get(props.get("Image.NominalPixelRange", ""), {})}
    return hints


def preset_for(input_shape: tuple, model: onnx.ModelProto | None = None) -> Preprocess:
    """The model's own hints when it carries them (`onnxpath.preprocess` JSON, or ONNX image
    metadata over the `none` preset), else `imagenet` for 3x224x224, else `none`."""
    layout = guess_layout(input_shape)
    if model is not None:
        hint = {p.key: p.value for p in model.metadata_props}.get("onnxpath.preprocess")
        if hint:
            return replace(from_json(json.loads(hint)), layout=layout)
        hints = metadata_hints(model)
        if hints:
            return replace(PRESETS["none"], layout=layout, **hints)
    if model is not None and integer_input(model):
        # uint8 pixels, cast and normalised inside the graph: feed the raw 0..255 values
        return replace(PRESETS["none"], scale=1.0, layout=layout)
    if tuple(input_shape[1:]) == (3, 224, 224):
        return PRESETS["imagenet"]
    return replace(PRESETS["none"], layout=layout)


def integer_input(model: onnx.ModelProto) -> bool:
    """Whether the model's (first) input takes integers."""
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    return bool(inputs) and inputs[0].type.tensor_type.elem_type in (
        onnx.TensorProto.UINT8, onnx.TensorProto.INT8, onnx.TensorProto.UINT16,
        onnx.TensorProto.INT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64)


def resolve_preprocess(input_shape: tuple, model: onnx.ModelProto | None = None,
                       preset: str | None = None, config: str | Path | None = None,
                       **overrides) -> Preprocess:
    """The recipe for a model, most specific last: the model's hints (or the default for its
    input shape), then `preset`, then a JSON `config` file, then explicit `overrides` (the
    command-line flags; None values are ignored)."""
    if preset is not None and preset not in PRESETS:
        raise UsageError(f"unknown --preset '{preset}'; choose from {', '.join(PRESETS)}")
    prep = (replace(PRESETS[preset], layout=guess_layout(input_shape)) if preset
            else preset_for(input_shape, model))
    if config is not None:
        prep = replace(from_json(read_config(Path(config))), layout=prep.layout)
    changes = {k: v for k, v in overrides.items() if v is not None}
    if changes.get("layout") not in (None, "nchw", "nhwc"):
        raise UsageError(f"--layout takes nchw or nhwc, got '{changes['layout']}'")
    if "resize" in changes and "crop" not in changes:
        changes["crop"] = changes["resize"] > 0
    return replace(prep, **changes)


def read_config(path: Path) -> dict:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise UsageError(f"cannot read preprocessing file {path}: {err.strerror}") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UsageError(f"preprocessing file {path} is not valid JSON: {err}") from err
    if not isinstance(config, dict):
        raise UsageError(f"preprocessing file {path} must hold a JSON object")
    return config


def from_json(config: dict) -> Preprocess:
    """Our own keys, or a Hugging Face `preprocessor_config.json`."""
    try:
        return _from_json(config)
    except (KeyError, TypeError, ValueError) as err:
        raise UsageError(f"cannot use the preprocessing config ({type(err).__name__}: {err})") \
            from err


def _from_json(config: dict) -> Preprocess:
    size = config.get("size")
    shortest = None
    if isinstance(size, dict):
        if "height" in size:
            size = (size["height"], size["width"])
        elif "shortest_edge" in size:
            shortest, size = int(size["shortest_edge"]), None
    elif isinstance(size, int):
        size = (size, size)
    elif size is not None:
        size = tuple(size)
    crop = config.get("crop_size")
    if isinstance(crop, dict):
        crop = (crop["height"], crop["width"])
    elif isinstance(crop, int):
        crop = (crop, crop)
    do_crop = bool(crop) and config.get("do_center_crop", True)
    base = Preprocess(
        size=tuple(int(v) for v in crop) if do_crop else size,
        scale=float(config.get("rescale_factor", config.get("scale", 1 / 255)))
        if config.get("do_rescale", True) else 1.0,
        mean=tuple(float(v) for v in config.get("image_mean", config.get("mean", (0.0,) * 3)))
        if config.get("do_normalize", True) else (0.0, 0.0, 0.0),
        std=tuple(float(v) for v in config.get("image_std", config.get("std", (1.0,) * 3)))
        if config.get("do_normalize", True) else (1.0, 1.0, 1.0),
        bgr=bool(config.get("bgr", False)),
        gray=bool(config.get("gray", False)),
        layout=str(config.get("layout", "nchw")),
        resample=resample_name(config.get("resample", "bilinear")),
    )
    resize = config.get("resize")  # our own key: a shorter side, or [H, W] (no crop)
    if isinstance(resize, (list, tuple)):
        return replace(base, size=base.size or tuple(int(v) for v in resize), resize=None,
                       crop=False)
    if do_crop:
        short = shortest or (size[0] if size else None) or resize
        if short:
            base = replace(base, resize=int(short), crop=True)
    elif resize:
        base = replace(base, resize=int(resize), crop=config.get("crop") is not False)
    return base
