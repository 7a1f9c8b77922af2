"""Time series and audio: C×T or T tensors from `.npy`, CSV columns (one column per channel,
one row per time step) or `.wav` (the standard library's `wave`). Rendering: a PNG line plot,
one panel per channel, over a colour band of the attribution (blue < 0 < red)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from onnxpath.errors import InputError, UsageError
from onnxpath.io import Adapter, Example
from onnxpath.io.render import colour
from onnxpath.io.table import read_csv

SAMPLE_RATE_KEYS = ("sample_rate", "sampling_rate", "sample-rate")


def model_sample_rate(model) -> int | None:
    """The sample rate the model declares in its metadata, when it declares one."""
    for prop in model.metadata_props:
        if prop.key.lower() in SAMPLE_RATE_KEYS:
            try:
                return int(float(prop.value))
            except ValueError:
                return None
    return None


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """(C×T float32 in [-1, 1], sample rate) from a PCM .wav."""
    try:
        with wave.open(str(path), "rb") as handle:
            channels, width = handle.getnchannels(), handle.getsampwidth()
            rate, frames = handle.getframerate(), handle.readframes(handle.getnframes())
    except (OSError, wave.Error, EOFError) as err:
        raise InputError(f"cannot read {path} as a PCM .wav: {err}") from err
    if width == 1:
        samples = (np.frombuffer(frames, np.uint8).astype(np.float32) - 128) / 128
    elif width in (2, 4):
        dtype = np.int16 if width == 2 else np.int32
        samples = np.frombuffer(frames, dtype).astype(np.float32) / float(2 ** (8 * width - 1))
    elif width == 3:
        raw = np.frombuffer(frames, np.uint8).reshape(-1, 3).astype(np.int32)
        value = raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)
        samples = (np.where(value >= 2 ** 23, value - 2 ** 24, value) / 2 ** 23).astype(np.float32)
    else:
        raise InputError(f"{path}: {8 * width}-bit samples are not supported")
    return samples.reshape(-1, channels).T.copy(), rate


def fit(signal: np.ndarray, shape: tuple, path: Path) -> np.ndarray:
    """A C×T or T signal in the model's per-example layout (shape without the batch)."""
    signal = np.asarray(signal, dtype=np.float32)
    if len(shape) == 1 and signal.ndim == 2 and signal.shape[0] == 1:
        signal = signal[0]
    if len(shape) == 2 and signal.ndim == 1:
        signal = signal[None]
    if signal.ndim != len(shape):
        raise InputError(f"{path}: a signal of shape {signal.shape}; the model takes "
                         f"{tuple(d if isinstance(d, int) else '?' for d in shape)}")
    for got, want in zip(signal.shape, shape, strict=True):
        if isinstance(want, int) and want != got:
            raise InputError(f"{path}: a signal of shape {signal.shape}; the model takes "
                             f"{tuple(d if isinstance(d, int) else '?' for d in shape)}")
    return signal


def read(path: Path, shape: tuple, sample_rate: int | None = None,
         expected_rate: int | None = None, stem: str | None = None) -> list[Example]:
    """One example from `.npy`, `.csv` (columns are channels) or `.wav`. A .wav's rate must
    equal `sample_rate` (--sample-rate) and the model's declared rate when they are known."""
    suffix = path.suffix.lower()
    rate = sample_rate
    if suffix == ".wav":
        signal, rate = read_wav(path)
        for name, want in (("--sample-rate", sample_rate), ("the model", expected_rate)):
            if want is not None and want != rate:
                raise InputError(f"{path} is sampled at {rate} Hz; {name} expects {want} Hz "
                                 "(resample it first)")
    elif suffix == ".csv":
        _, rows = read_csv(path)
        signal = rows.T
    else:
        try:
            signal = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise InputError(f"cannot read {path} as .npy: {err}") from err
        if signal.ndim == len(shape) + 1 and signal.shape[0] == 1:
            signal = signal[0]
    if rate is not None and expected_rate is not None and rate != expected_rate:
        raise UsageError(f"--sample-rate {rate} differs from the model's {expected_rate} Hz")
    x = fit(signal, shape, path)
    return [Example(str(path), stem or path.stem, x, "series", values=x, sample_rate=rate)]


def plot(values: np.ndarray, scores: np.ndarray, width: int = 900,
         panel: int = 120) -> Image.Image:
    """Line plot of each channel of `values` (C×T or T) over a band coloured by `scores` (T:
    the attribution summed over channels), signed: blue < 0 < red, white at 0."""
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    channels, length = values.shape
    band = colour(scores[None, :], "bwr")  # 1×T×3 in [0, 1]
    strip = Image.fromarray((band * 255).astype(np.uint8)).resize((width, 1), Image.NEAREST)
    image = Image.new("RGB", (width, panel * channels + 16), "white")
    draw = ImageDraw.Draw(image)
    xs = np.linspace(0, width - 1, length)
    for c in range(channels):
        top = c * panel + 8
        image.paste(strip.resize((width, panel - 8), Image.NEAREST), (0, top))
        low, high = values[c].min(), values[c].max()
        span = high - low if high > low else 1.0
        ys = top + (panel - 12) * (1 - (values[c] - low) / span) + 2
        draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=(20, 20, 20), width=1)
    return image


SERIES_POINTS = 2048  # a JSON line stays small; the raw map at full length is the .npy


def binned(row: np.ndarray, points: int, how: str) -> np.ndarray:
    """`row` (T) in at most `points` equal bins, each its samples' "mean" or "sum"; as it is
    when T fits."""
    if len(row) <= points:
        return row
    starts = np.linspace(0, len(row), points + 1).round().astype(int)[:-1]
    total = np.add.reduceat(row, starts)
    return total / np.diff(np.append(starts, len(row))) if how == "mean" else total


def series_field(values: np.ndarray, raw: np.ndarray, points: int = SERIES_POINTS):
    """The record's `series`: {"values", "scores"} per channel (a list when C > 1), the score
    of a step being the attribution of that channel's sample. Series longer than `points`
    are binned: values averaged, scores summed (a bin's score is its samples' total)."""
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    scores = np.asarray(raw, dtype=np.float64).reshape(values.shape)
    channels = [{"values": binned(v, points, "mean").tolist(),
                 "scores": binned(s, points, "sum").tolist()}
                for v, s in zip(values, scores, strict=True)]
    return channels[0] if len(channels) == 1 else channels


class SeriesAdapter(Adapter):
    """One signal per file: the `series` field and a line plot over the attribution."""

    kind = "series"

    def read(self, path: Path, stem: str) -> list[Example]:
        explainer = self.explainer
        return read(path, explainer.input_shape[1:], self.job.sample_rate,
                    model_sample_rate(explainer.proto), stem)

    def write(self, example: Example, raw: np.ndarray, base: str, title: str, record: dict,
              files) -> None:
        record["series"] = series_field(example.values, raw)
        if files.out is not None:
            per_step = raw.reshape(-1, raw.shape[-1]).sum(axis=0)
            record["outputs"]["png"] = files.png(base, plot(example.values, per_step))
