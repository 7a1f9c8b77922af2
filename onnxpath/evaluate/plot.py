"""Line plots of evaluation curves as PNG, drawn with Pillow (matplotlib is not a runtime
dependency): axes with ticks, one line per method with a standard-error band, a legend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from onnxpath.evaluate.report import mean_sem
from onnxpath.io.outputs import save_png

# Tableau-10: distinguishable, and the same colour per method across every plot.
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


@dataclass
class Line:
    label: str
    x: Sequence[float]
    y: Sequence[float]
    sem: Sequence[float] | None = None


def _font(size: int = 13) -> ImageFont.ImageFont:
    """Pillow's bundled TrueType font where FreeType is available, else its bitmap font."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1, or no FreeType
        return ImageFont.load_default()


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering [low, high]."""
    if not np.isfinite(low) or not np.isfinite(high):
        return [0.0, 1.0]
    if high <= low:
        high = low + 1.0
    raw = (high - low) / count
    magnitude = 10 ** np.floor(np.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start = np.floor(low / step) * step
    ticks = np.arange(start, high + step * 0.5, step)
    return [float(round(t, 10)) for t in ticks]


def _label(value: float) -> str:
    return f"{value:g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"


def line_plot(lines: Sequence[Line], title: str, xlabel: str, ylabel: str,
              size: tuple[int, int] = (720, 460)) -> Image.Image:
    font = _font()
    width, height = size
    left, right, top, bottom = 70, 190, 36, 56
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image, "RGBA")
    xs = np.concatenate([np.asarray(ln.x, dtype=float) for ln in lines]) if lines else [0, 1]
    ys = [np.asarray(ln.y, dtype=float) for ln in lines]
    bands = [np.asarray(ln.sem if ln.sem is not None else np.zeros(len(ln.y)), dtype=float)
             for ln in lines]
    lows = [np.nanmin(y - np.nan_to_num(s)) for y, s in zip(ys, bands, strict=True)
            if np.isfinite(y).any()]
    highs = [np.nanmax(y + np.nan_to_num(s)) for y, s in zip(ys, bands, strict=True)
             if np.isfinite(y).any()]
    xticks = nice_ticks(float(np.min(xs)), float(np.max(xs)))
    yticks = nice_ticks(min(lows, default=0.0), max(highs, default=1.0))
    x0, x1, y0, y1 = xticks[0], xticks[-1], yticks[0], yticks[-1]
    plot_w, plot_h = width - left - right, height - top - bottom

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x0) / (x1 - x0) * plot_w, top + (1 - (y - y0) / (y1 - y0)) * plot_h)

    for t in yticks:
        _, py = to_px(x0, t)
        draw.line([(left, py), (left + plot_w, py)], fill=(230, 230, 230))
        text = _label(t)
        draw.text((left - 6 - draw.textlength(text, font=font), py - 5), text, fill="black",
                  font=font)
    for t in xticks:
        px, _ = to_px(t, y0)
        draw.line([(px, top), (px, top + plot_h)], fill=(240, 240, 240))
        text = _label(t)
        draw.text((px - draw.textlength(text, font=font) / 2, top + plot_h + 6), text,
                  fill="black", font=font)
    draw.rectangle([left, top, left + plot_w, top + plot_h], outline="black")
    for i, (line, y, band) in enumerate(zip(lines, ys, bands, strict=True)):
        colour = PALETTE[i % len(PALETTE)]
        x = np.asarray(line.x, dtype=float)
        ok = np.isfinite(y)
        if ok.sum() >= 2 and np.isfinite(band[ok]).any() and band[ok].max() > 0:
            b = np.nan_to_num(band)
            upper = [to_px(a, c) for a, c in zip(x[ok], (y + b)[ok], strict=True)]
            lower = [to_px(a, c) for a, c in zip(x[ok], (y - b)[ok], strict=True)]
            draw.polygon(upper + lower[::-1], fill=(*colour, 45))
        points = [to_px(a, c) for a, c in zip(x[ok], y[ok], strict=True)]
        if len(points) >= 2:
            draw.line(points, fill=colour, width=2, joint="curve")
        if len(points) <= 30:
            for px, py in points:
                draw.ellipse([px - 2.5, py - 2.5, px + 2.5, py + 2.5], fill=colour)
        ly = top + 8 + 18 * i
        lx = left + plot_w + 14
        draw.line([(lx, ly + 6), (lx + 24, ly + 6)], fill=colour, width=3)
        draw.text((lx + 30, ly), line.label, fill="black", font=font)
    draw.text((left, 12), title, fill="black", font=font)
    draw.text((left + plot_w / 2 - draw.textlength(xlabel, font=font) / 2, height - 22),
              xlabel, fill="black", font=font)
    label = Image.new("RGB", (int(draw.textlength(ylabel, font=font)) + 4, 18), "white")
    ImageDraw.Draw(label).text((2, 1), ylabel, fill="black", font=font)
    label = label.rotate(90, expand=True)
    image.paste(label, (8, int(top + plot_h / 2 - label.height / 2)))
    return image


TITLES = {
    "lerf": ("LeRF: least relevant pixels removed", "|p - p'| / p"),
    "morf": ("MoRF: most relevant pixels removed", "|p - p'| / p"),
    "deletion": ("Deletion (RISE)", "p(class)"),
    "insertion": ("Insertion (RISE)", "p(class)"),
    "road-morf": ("ROAD, most relevant imputed", None),
    "road-lerf": ("ROAD, least relevant imputed", None),
    "sensitivity-n": ("Sensitivity-n", "Pearson r"),
    "sanity": ("Sanity check: cascading randomisation", None),
    "monotonicity": ("Monotonicity (Arya et al.): features inserted, least relevant first",
                     "p(class)"),
    "mprt": ("Model-parameter randomisation (Quantus MPRT)", "Spearman of |maps|"),
}


def write_plots(report, directory: Path) -> list[Path]:
    """One PNG per (metric, measure) of `report`, named `<metric>[-<measure>].png`."""
    groups: dict[tuple[str, str], list] = {}
    for series in report.series:
        groups.setdefault((series.metric, series.measure), []).append(series)
    written = []
    for (metric, measure), members in groups.items():
        lines = []
        for s in members:
            mean, sem, _ = mean_sem(s.values)
            lines.append(Line(s.method, s.x, mean, sem))
        title, ylabel = TITLES.get(metric, (metric, None))
        single = sum(1 for (m, _) in groups if m == metric) == 1
        name = metric if single else f"{metric}-{measure}"
        better = members[0].better
        image = line_plot(lines, f"{title} ({measure.replace('_', ' ')}; {better} is better, "
                          f"n={len(members[0].values)})", members[0].xlabel,
                          ylabel or measure.replace("_", " "))
        written.append(save_png(Path(directory) / f"{name}.png", image))
    return written
