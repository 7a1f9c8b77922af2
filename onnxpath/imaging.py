"""Reading inputs into the model's input space: images through a preprocessing recipe, `.npy`
tensors as they are (`io/tensors.py`)."""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
from PIL import Image, ImageOps

from .errors import InputError, UsageError
from .io.tensors import load_npy
from .storage import RemotePath, as_location

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


class LargeImageWarning(UserWarning):
    """An image over Pillow's pixel limit but under twice it: read, with a warning."""


def read_image(path: Path) -> Image.Image:
    """The decoded image, upright (EXIF orientation applied). Pillow's decompression-bomb limit
    (`Image.MAX_IMAGE_PIXELS`) stays as Pillow sets it: over twice the limit is an error."""
    try:
        source = io.BytesIO(path.read_bytes()) if isinstance(path, RemotePath) else path
        with warnings.catch_warnings(record=True) as caught, Image.open(source) as img:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            img.load()
            upright = ImageOps.exif_transpose(img)
    except FileNotFoundError as err:
        raise InputError(f"input not found: {path}") from err
    except IsADirectoryError as err:
        raise InputError(f"{path} is a directory, not an image") from err
    except Image.DecompressionBombError as err:
        raise InputError(f"{path}: refusing a possible decompression bomb ({err})") from err
    except PermissionError as err:
        raise InputError(f"cannot read {path}: permission denied") from err
    except Exception as err:  # decoders raise many types for damaged files
        raise InputError(f"cannot read {path} as an image ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else 'unreadable'}); "
                         "is it a complete jpg/png/bmp/webp/tiff file?") from err
    for warning in caught:
        if issubclass(warning.category, Image.DecompressionBombWarning):
            warnings.warn(f"{path}: {warning.message}", LargeImageWarning, stacklevel=2)
    return upright


def eight_bit(img: Image.Image) -> Image.Image:
    """16-bit and 32-bit grayscale (PNG, TIFF) as 8-bit L; Pillow's own convert("RGB") would
    clip every value above 255 to white. Float images are taken as [0, 1] when they fit."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        array = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or array.max() > 255 else 255.0
        return Image.fromarray(np.clip(np.rint(array * 255 / top), 0, 255).astype(np.uint8), "L")
    if img.mode == "F":
        array = np.asarray(img, dtype=np.float64)
        if array.size and np.nanmax(array) <= 1.0:
            array = array * 255
        return Image.fromarray(np.clip(np.nan_to_num(array), 0, 255).astype(np.uint8), "L")
    return img


def to_tensor(img: Image.Image, prep: Preprocess, size: tuple[int, int],
              channels: int) -> tuple[np.ndarray, np.ndarray]:
    """(model tensor C×H×W or H×W×C, RGB uint8 image of what the model saw).

    Any image mode becomes the model's channel count: 1 (gray), 3 (RGB; alpha is dropped, as
    torchvision's loader does) or 4 (RGBA). `gray` with 3 channels repeats the gray value."""
    if channels not in (1, 3, 4):
        raise InputError(f"the model takes {channels}-channel input; images give 1, 3 or 4 "
                         "channels (give .npy tensors instead)")
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[channels]
    resample = RESAMPLE[prep.resample]
    img = eight_bit(img)
    img = img.convert("L").convert(mode) if prep.gray and channels == 3 else img.convert(mode)
    if prep.crop and prep.resize:
        w, h = img.size
        ratio = prep.resize / min(w, h)
        img = img.resize((max(1, round(w * ratio)), max(1, round(h * ratio))),
                         resample)
        w, h = img.size
        if w < size[1] or h < size[0]:  # --resize smaller than the crop: scale up to fit
            ratio = max(size[1] / w, size[0] / h)
            img = img.resize((max(size[1], round(w * ratio)), max(size[0], round(h * ratio))),
                             resample)
            w, h = img.size
        top, left = (h - size[0]) // 2, (w - size[1]) // 2
        img = img.crop((left, top, left + size[1], top + size[0]))
    else:
        img = img.resize((size[1], size[0]), resample)
    seen = np.asarray(img.convert("RGB"), dtype=np.uint8)
    array = np.asarray(img, dtype=np.float32)
    if array.ndim == 2:
        array = array[..., None]
    if prep.bgr and channels >= 3:
        array = np.concatenate([array[..., 2::-1], array[..., 3:]], axis=-1)
    mean = per_channel(prep.mean, channels, "--mean")
    std = per_channel(prep.std, channels, "--std")
    if (std == 0).any():
        raise UsageError("--std must not hold zeros")
    array = (array * prep.scale - mean) / std
    if prep.layout == "nchw":
        array = array.transpose(2, 0, 1)
    return np.ascontiguousarray(array, dtype=np.float32), seen


def per_channel(values: tuple[float, ...], channels: int, option: str) -> np.ndarray:
    """One value per channel: a single value is repeated; three (RGB) on a gray model use the
    first; an alpha channel is left as it is (mean 0, std 1)."""
    values = tuple(values)
    if len(values) == 1:
        values = values * channels
    elif channels == 1:
        values = values[:1]
    elif channels == 4 and len(values) == 3:
        values = (*values, 0.0 if option == "--mean" else 1.0)
    if len(values) != channels:
        raise UsageError(f"{option} has {len(values)} values; the model takes {channels} "
                         "channels")
    return np.asarray(values, dtype=np.float32)


def model_size(input_shape: tuple, prep: Preprocess, layout: str) -> tuple[tuple[int, int], int]:
    """Spatial size and channel count the model wants, given its declared input shape."""
    if len(input_shape) != 4:
        raise InputError(f"the model takes inputs of shape {tuple(input_shape)}, not images; "
                         "give .npy tensors")
    dims = input_shape[1:]
    c, h, w = (dims[0], dims[1], dims[2]) if layout == "nchw" else (dims[2], dims[0], dims[1])
    if isinstance(h, int) and isinstance(w, int):
        size = (h, w)
        if prep.size is not None and tuple(prep.size) != size:
            raise UsageError(f"--size {prep.size[0]}x{prep.size[1]} does not match the model "
                             f"input {h}x{w}")
    elif prep.size is not None:
        size = tuple(prep.size)
    else:
        raise UsageError("the model's spatial size is dynamic; give --size HxW")
    return size, (c if isinstance(c, int) else 3)


def load_input(path: str | Path, input_shape: tuple,
               prep: Preprocess) -> tuple[np.ndarray, np.ndarray | None]:
    """(tensor for one example, RGB image or None for `.npy` inputs)."""
    path = as_location(path)
    if path.suffix.lower() == ".npy":
        return load_npy(path, input_shape), None
    size, channels = model_size(input_shape, prep, prep.layout)
    return to_tensor(read_image(path), prep, size, channels)
