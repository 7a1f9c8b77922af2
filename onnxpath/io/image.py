"""Images in and out: reading an image (or an `.npy` tensor) into the model's input space through a
preprocessing recipe, and the image adapter of the run loop."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from onnxpath.errors import InputError, UsageError
from onnxpath.io import Adapter, Example
from onnxpath.io.outputs import cannot_write
from onnxpath.io.preprocess import RESAMPLE, Preprocess
from onnxpath.io.render import overlay, reduce_channels, side_by_side
from onnxpath.io.storage import RemotePath, as_location
from onnxpath.io.tensors import load_npy, load_npz


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


def channels_first(raw: np.ndarray, layout: str) -> np.ndarray:
    return np.moveaxis(raw, -1, 0) if layout == "nhwc" and raw.ndim == 3 else raw


class ImageAdapter(Adapter):
    """Images and `.npy`/`.npz` tensors for an image model: one example per file, stacked by
    shape into ONNX Runtime batches; an overlay PNG per map, and with --side-by-side one
    figure per input with a panel per method."""

    kind = "image"
    stackable = True

    def read(self, path: Path, stem: str) -> list[Example]:
        if str(path).lower().endswith(".npz"):
            x, picture = load_npz(path, self.explainer.inputs), None
        else:
            x, picture = load_input(path, self.explainer.input_shape, self.job.prep)
        return [Example(str(path), stem, x, self.kind, values=picture)]

    def write(self, example: Example, raw: np.ndarray, base: str, title: str, record: dict,
              files) -> None:
        style = self.job.style
        if raw.ndim < 2 or (files.out is None and (files.show is None or example.values is None)):
            return
        heat = reduce_channels(channels_first(raw, self.job.prep.layout), style.reduce)
        if files.out is None:  # the overlay goes to the report only
            files.show(record, overlay(example.values, heat, **style.overlay_args()))
            return
        example.extra.setdefault("panels", []).append((title, heat))
        if example.values is not None:
            record["outputs"]["png"] = files.png(base, overlay(example.values, heat,
                                                              **style.overlay_args()))

    def finish(self, example: Example, records: list[dict], files) -> None:
        panels = example.extra.pop("panels", [])
        if not (self.job.side_by_side and panels):
            return
        try:
            figure = files.png(f"{example.stem}.side-by-side",
                               side_by_side(example.values, panels,
                                            **self.job.style.overlay_args()))
        except OSError as err:
            records[-1]["error"] = cannot_write(err)
            return
        for record in records:
            if record["error"] is None:
                record["outputs"]["side_by_side"] = figure
