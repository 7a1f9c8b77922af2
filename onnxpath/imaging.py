"""Reading inputs into the model's input space: images through a preprocessing recipe, `.npy`
tensors as they are."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError, UsageError

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


PRESETS = {
    "imagenet": Preprocess(size=(224, 224), resize=256, crop=True, mean=IMAGENET_MEAN,
                           std=IMAGENET_STD),
    "inception": Preprocess(scale=2 / 255, mean=(1.0, 1.0, 1.0)),  # [0,255] -> [-1,1]
    "caffe": Preprocess(scale=1.0, mean=(103.94, 116.78, 123.68), bgr=True),
    "none": Preprocess(),
}


def preset_for(input_shape: tuple, model: onnx.ModelProto | None = None) -> Preprocess:
    """The model's own hints when it carries them, else `imagenet` for 3x224x224, else `none`."""
    if model is not None:
        hint = {p.key: p.value for p in model.metadata_props}.get("onnxpath.preprocess")
        if hint:
            return from_json(json.loads(hint))
    if tuple(input_shape[1:]) == (3, 224, 224):
        return PRESETS["imagenet"]
    return PRESETS["none"]


def from_json(config: dict) -> Preprocess:
    """Our own keys, or a Hugging Face `preprocessor_config.json`."""
    size = config.get("size")
    if isinstance(size, dict):
        if "height" in size:
            size = (size["height"], size["width"])
        elif "shortest_edge" in size:
            size = None
    elif isinstance(size, int):
        size = (size, size)
    elif size is not None:
        size = tuple(size)
    crop = config.get("crop_size")
    if isinstance(crop, dict):
        crop = (crop["height"], crop["width"])
    base = Preprocess(
        size=tuple(crop) if crop and config.get("do_center_crop") else size,
        scale=config.get("rescale_factor", config.get("scale", 1 / 255))
        if config.get("do_rescale", True) else 1.0,
        mean=tuple(config.get("image_mean", config.get("mean", (0.0, 0.0, 0.0))))
        if config.get("do_normalize", True) else (0.0, 0.0, 0.0),
        std=tuple(config.get("image_std", config.get("std", (1.0, 1.0, 1.0))))
        if config.get("do_normalize", True) else (1.0, 1.0, 1.0),
        bgr=bool(config.get("bgr", False)),
    )
    if crop and config.get("do_center_crop") and size:
        short = size[0] if isinstance(size, tuple) else size
        base = replace(base, resize=short, crop=True)
    return base


def read_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            img.load()
            return ImageOps.exif_transpose(img)
    except FileNotFoundError as err:
        raise InputError(f"input not found: {path}") from err
    except Image.DecompressionBombError as err:
        raise InputError(f"{path}: image is too large for Pillow's safety limit ({err})") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise InputError(f"cannot read {path} as an image ({type(err).__name__}); "
                         "is it a complete jpg/png/bmp/webp/tiff file?") from err


def to_tensor(img: Image.Image, prep: Preprocess, size: tuple[int, int],
              channels: int) -> tuple[np.ndarray, np.ndarray]:
    """(model tensor C×H×W or H×W×C, RGB uint8 image of what the model saw)."""
    gray = prep.gray or channels == 1
    img = img.convert("L" if gray else "RGB")
    if prep.crop and prep.resize:
        w, h = img.size
        ratio = prep.resize / min(w, h)
        img = img.resize((max(1, round(w * ratio)), max(1, round(h * ratio))),
                         Image.Resampling.BILINEAR)
        w, h = img.size
        top, left = (h - size[0]) // 2, (w - size[1]) // 2
        img = img.crop((left, top, left + size[1], top + size[0]))
    else:
        img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    seen = np.asarray(img.convert("RGB"), dtype=np.uint8)
    array = np.asarray(img, dtype=np.float32)
    if array.ndim == 2:
        array = array[..., None]
    if prep.bgr:
        array = array[..., ::-1]
    mean = np.asarray(prep.mean[:array.shape[-1]], dtype=np.float32)
    std = np.asarray(prep.std[:array.shape[-1]], dtype=np.float32)
    array = (array * prep.scale - mean) / std
    if prep.layout == "nchw":
        array = array.transpose(2, 0, 1)
    return np.ascontiguousarray(array, dtype=np.float32), seen


def load_npy(path: Path, input_shape: tuple) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError as err:
        raise InputError(f"input not found: {path}") from err
    except (ValueError, OSError) as err:
        raise InputError(f"cannot read {path} as a .npy tensor ({err})".splitlines()[0]) from err
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise InputError(f"{path}: dtype {array.dtype} is not a real number type")
    want = tuple(input_shape[1:])
    if array.ndim == len(want) + 1 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != len(want) or any(isinstance(w, int) and w != g
                                      for w, g in zip(want, array.shape, strict=True)):
        shown = tuple(w if isinstance(w, int) else "?" for w in want)
        raise InputError(f"{path}: tensor shape {array.shape} does not match the model input "
                         f"{shown} (or 1×{shown})")
    if not np.isfinite(array).all():
        raise InputError(f"{path}: tensor holds NaN or Inf values")
    return array.astype(np.float32)


def model_size(input_shape: tuple, prep: Preprocess, layout: str) -> tuple[tuple[int, int], int]:
    """Spatial size and channel count the model wants, given its declared input shape."""
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
    path = Path(path)
    if path.suffix.lower() == ".npy":
        return load_npy(path, input_shape), None
    if not path.exists():
        raise InputError(f"input not found: {path}")
    if path.is_dir():
        raise InputError(f"{path} is a directory, not an image")
    size, channels = model_size(input_shape, prep, prep.layout)
    return to_tensor(read_image(path), prep, size, channels)
