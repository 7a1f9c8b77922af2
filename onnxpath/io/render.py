"""From a raw C×H×W attribution to a picture: reduce channels, normalise, colour, overlay."""

from __future__ import annotations

import numpy as np
from PIL import Image

REDUCTIONS = ("max-abs", "sum", "abs-sum", "l2")


def reduce_channels(attribution: np.ndarray, how: str = "max-abs") -> np.ndarray:
    """C×H×W -> H×W. `max-abs` keeps, per pixel, the channel value of largest magnitude, sign
    included: the pathway paper's display and pixel-ranking rule."""
    a = np.asarray(attribution, dtype=np.float32)
    if a.ndim == 2:
        return a
    if how == "max-abs":
        idx = np.abs(a).argmax(axis=0)
        return np.take_along_axis(a, idx[None], axis=0)[0]
    if how == "sum":
        return a.sum(axis=0)
    if how == "abs-sum":
        return np.abs(a).sum(axis=0)
    if how == "l2":
        return np.sqrt((a * a).sum(axis=0))
    raise ValueError(f"unknown channel reduction '{how}'; choose from {', '.join(REDUCTIONS)}")


NORMALISATIONS = ("percentile", "outlier", "minmax")
COLORMAPS = ("jet", "magma", "bwr")
# Matplotlib's magma and RdBu_r sampled evenly (17 and 9 anchors), interpolated linearly: close
# enough for a heatmap, without matplotlib as a dependency.
MAGMA = np.array([
    (0.001, 0.0, 0.014), (0.04, 0.031, 0.134), (0.113, 0.065, 0.277), (0.212, 0.062, 0.419),
    (0.317, 0.072, 0.485), (0.415, 0.11, 0.505), (0.513, 0.148, 0.508), (0.614, 0.182, 0.499),
    (0.716, 0.215, 0.475), (0.817, 0.256, 0.436), (0.904, 0.32, 0.388), (0.961, 0.418, 0.36),
    (0.987, 0.536, 0.382), (0.996, 0.654, 0.446), (0.997, 0.77, 0.535), (0.992, 0.884, 0.64),
    (0.987, 0.991, 0.75)])
BLUE_WHITE_RED = np.array([
    (0.02, 0.188, 0.38), (0.163, 0.445, 0.698), (0.421, 0.676, 0.819), (0.761, 0.869, 0.925),
    (0.969, 0.966, 0.965), (0.982, 0.801, 0.706), (0.895, 0.504, 0.4), (0.728, 0.155, 0.197),
    (0.404, 0.0, 0.122)])


def scale_of(mag: np.ndarray, how: str = "percentile", percentile: float | None = None) -> float:
    """The magnitude that maps to full colour.

    percentile: the P-th percentile of |map| (99 by default); outlier: Captum's rule, the
    smallest value whose cumulative sum of sorted |map| reaches P% of the total (98, i.e. 2%
    outliers); minmax: the maximum."""
    if how == "minmax" or (how == "percentile" and (percentile or 99.0) >= 100):
        top = float(mag.max()) if mag.size else 0.0
    elif how == "percentile":
        top = float(np.percentile(mag, 99.0 if percentile is None else percentile))
    elif how == "outlier":
        values = np.sort(mag.ravel())
        cumulative = np.cumsum(values, dtype=np.float64)
        share = (98.0 if percentile is None else percentile) / 100
        index = np.searchsorted(cumulative, cumulative[-1] * share) if values.size else 0
        top = float(values[min(index, values.size - 1)]) if values.size else 0.0
    else:
        raise ValueError(f"unknown normalisation '{how}'; choose from "
                         f"{', '.join(NORMALISATIONS)}")
    if not np.isfinite(top) or top <= 0:
        top = float(mag.max()) if mag.size and mag.max() > 0 else 1.0
    return top


def normalise(heat: np.ndarray, percentile: float | None = 99.0, how: str = "percentile",
              signed: bool = False) -> np.ndarray:
    """|heat| scaled to [0, 1] (or heat to [-1, 1] when `signed`), clipped at the scale from
    `scale_of`, so that one outlier cannot wash the map out."""
    mag = np.abs(heat)
    top = scale_of(mag, how, percentile)
    if signed:
        return np.clip(heat / top, -1.0, 1.0)
    return np.clip(mag / top, 0.0, 1.0)


def jet(values: np.ndarray) -> np.ndarray:
    """Matplotlib's `jet`, piecewise linear, as float RGB in [0, 1]."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return np.concatenate([r, g, b], axis=-1)


def from_anchors(values: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    v = np.clip(values, 0.0, 1.0) * (len(anchors) - 1)
    low = np.minimum(np.floor(v).astype(int), len(anchors) - 2)
    frac = (v - low)[..., None]
    return anchors[low] * (1 - frac) + anchors[low + 1] * frac


def colour(heat: np.ndarray, colormap: str = "jet", how: str = "percentile",
           percentile: float | None = None) -> np.ndarray:
    """H×W map -> H×W×3 float RGB: jet or magma over the magnitude, or bwr (blue negative,
    white zero, red positive) over the signed value."""
    if colormap == "bwr":
        return from_anchors((normalise(heat, percentile, how, signed=True) + 1) / 2,
                            BLUE_WHITE_RED)
    values = normalise(heat, percentile, how)
    if colormap == "jet":
        return jet(values)
    if colormap == "magma":
        return from_anchors(values, MAGMA)
    raise ValueError(f"unknown colormap '{colormap}'; choose from {', '.join(COLORMAPS)}")


def overlay(image: np.ndarray | None, heat: np.ndarray, alpha: float = 0.5,
            colormap: str = "jet", how: str = "percentile",
            percentile: float | None = None) -> Image.Image:
    """The coloured map at `alpha` over a grayscale copy of the input (or alone). A smaller
    map (a layer's h×w) is upsampled bilinearly to the input's size first, as Grad-CAM's is."""
    if image is not None and all(m < i for m, i in zip(np.shape(heat), image.shape[:2],
                                                        strict=False)):
        heat = np.asarray(Image.fromarray(np.asarray(heat, dtype=np.float32)).resize(
            (image.shape[1], image.shape[0]), Image.BILINEAR))
    colours = colour(heat, colormap, how, percentile)
    if image is not None:
        gray = np.asarray(Image.fromarray(image).convert("L"), dtype=np.float32)[..., None] / 255
        if gray.shape[:2] != colours.shape[:2]:
            gray = np.asarray(Image.fromarray(image).convert("L").resize(
                (colours.shape[1], colours.shape[0])), dtype=np.float32)[..., None] / 255
        colours = alpha * colours + (1 - alpha) * np.repeat(gray, 3, axis=-1)
    return Image.fromarray((np.clip(colours, 0, 1) * 255).round().astype(np.uint8))


def side_by_side(image: np.ndarray | None, panels: list[tuple[str, np.ndarray]],
                 min_height: int = 160, **style) -> Image.Image:
    """One row: the input, then one titled overlay per (title, H×W heat) panel. Small inputs
    are enlarged (nearest neighbour) to `min_height` so titles and pixels stay legible."""
    from PIL import ImageDraw

    tiles = [("input", Image.fromarray(image).convert("RGB"))] if image is not None else []
    tiles += [(title, overlay(image, heat, **style)) for title, heat in panels]
    height = max(tile.height for _, tile in tiles)
    scale = max(1.0, min_height / height)
    tiles = [(t, tile.resize((round(tile.width * scale), round(tile.height * scale)),
                             Image.NEAREST)) for t, tile in tiles]
    title_h, gap = 16, 4
    width = sum(tile.width for _, tile in tiles) + gap * (len(tiles) - 1)
    figure = Image.new("RGB", (width, title_h + max(t.height for _, t in tiles)), "white")
    draw = ImageDraw.Draw(figure)
    left = 0
    for title, tile in tiles:
        figure.paste(tile, (left, title_h))
        draw.text((left + 2, 2), title, fill="black")
        left += tile.width + gap
    return figure
