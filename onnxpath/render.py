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


def normalise(heat: np.ndarray, percentile: float = 99.0) -> np.ndarray:
    """|heat| scaled to [0, 1], clipped at the given percentile so one outlier cannot wash the
    map out."""
    mag = np.abs(heat)
    top = np.percentile(mag, percentile) if percentile < 100 else mag.max()
    if not np.isfinite(top) or top <= 0:
        top = mag.max() if mag.max() > 0 else 1.0
    return np.clip(mag / top, 0.0, 1.0)


def jet(values: np.ndarray) -> np.ndarray:
    """Matplotlib's `jet`, piecewise linear, as float RGB in [0, 1]."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return np.concatenate([r, g, b], axis=-1)


def overlay(image: np.ndarray | None, heat: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """The coloured map at `alpha` over a grayscale copy of the input (or alone)."""
    colours = jet(normalise(heat))
    if image is not None:
        gray = np.asarray(Image.fromarray(image).convert("L"), dtype=np.float32)[..., None] / 255
        if gray.shape[:2] != colours.shape[:2]:
            gray = np.asarray(Image.fromarray(image).convert("L").resize(
                (colours.shape[1], colours.shape[0])), dtype=np.float32)[..., None] / 255
        colours = alpha * colours + (1 - alpha) * np.repeat(gray, 3, axis=-1)
    return Image.fromarray((np.clip(colours, 0, 1) * 255).round().astype(np.uint8))


def side_by_side(image: np.ndarray | None, panels: list[tuple[str, np.ndarray]],
                 min_height: int = 160) -> Image.Image:
    """One row: the input, then one titled overlay per (title, H×W heat) panel. Small inputs
    are enlarged (nearest neighbour) to `min_height` so titles and pixels stay legible."""
    from PIL import ImageDraw

    tiles = [("input", Image.fromarray(image).convert("RGB"))] if image is not None else []
    tiles += [(title, overlay(image, heat)) for title, heat in panels]
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
