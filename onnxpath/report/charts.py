"""Charts as inline SVG strings: line plots with standard-error bands, horizontal bar charts and
colour-map legends. SVG keeps a report small and sharp at any width, needs no image decoder,
and carries its own <title> for screen readers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

import numpy as np

from onnxpath.evaluate.plot import PALETTE, nice_ticks
from onnxpath.io.render import colour


def hex_colour(rgb: Sequence[float]) -> str:
    return "#" + "".join(f"{int(round(v)):02x}" for v in rgb)


METHOD_COLOURS = [hex_colour(c) for c in PALETTE]


def _num(value: float) -> str:
    return f"{value:.1f}"


def _tick(value: float) -> str:
    return f"{value:g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"


def number(value: object, digits: int = 4) -> str:
    """A number as a person reads it: `digits` significant digits, no float32 noise
    (34.099998474121094 -> 34.1), whole numbers whole, an exponent only past 1e-4 .. 1e15;
    anything else as it is."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return str(value)
    v = float(value)
    if not np.isfinite(v):
        return str(v)
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    if 1e-4 <= abs(v) < 1e15:
        return np.format_float_positional(v, precision=digits, unique=True, fractional=False,
                                          trim="-")
    return f"{v:.{digits}g}"


# Advance widths in em of DejaVu Sans, the widest of the usual sans-serif fonts, by class of
# character (rounded up): what a label needs, so that no font cuts it.
NARROW, WIDE = set("fijlrtI!|.,:;'`()[]{} "), set("mwMW@%")


def text_width(text: str, size: float = 12.0) -> float:
    """About how wide `text` is at font size `size` (px), rather more than less."""
    return size * sum(0.36 if c in NARROW else 1.0 if c in WIDE or ord(c) > 0x2E7F
                      else 0.78 if c.isupper() else 0.64 for c in text)


BREAKS = "_ /.-=:"  # a label may wrap after these


def wrap_label(text: str, room: float, lines: int = 3, size: float = 12.0) -> list[str]:
    """`text` in at most `lines` lines of at most `room` px, broken after BREAKS where it can
    (anywhere where it must); past the last line an ellipsis ends it."""
    out, line = [], ""
    pieces, piece = [], ""
    for c in text:
        piece += c
        if c in BREAKS:
            pieces.append(piece)
            piece = ""
    pieces += [piece] if piece else []
    for piece in pieces:
        while piece:
            if text_width(line + piece, size) <= room:
                line, piece = line + piece, ""
            elif line:
                out.append(line.rstrip())
                line, piece = "", piece.lstrip()
            else:  # a piece wider than the room: as much of it as fits
                n = max(1, max((k for k in range(1, len(piece) + 1)
                                if text_width(piece[:k], size) <= room), default=1))
                out.append(piece[:n])
                piece = piece[n:]
    if line:
        out.append(line.rstrip())
    if len(out) > lines:
        last = out[lines - 1]
        while last and text_width(last + "…", size) > room:
            last = last[:-1]
        out = out[:lines - 1] + [last + "…"]
    return out or [""]


def covering_ticks(low: float, high: float) -> list[float]:
    """Round ticks from at most `low` to at least `high` (nice_ticks can stop one step short
    of `high`, e.g. 0.8 for 0.9)."""
    ticks = nice_ticks(low, high)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    while ticks[-1] < high - 1e-12 * max(1.0, abs(high)):
        ticks.append(float(round(ticks[-1] + step, 10)))
    return ticks


@dataclass
class Curve:
    label: str
    x: Sequence[float]
    y: Sequence[float | None]
    sem: Sequence[float | None] | None = None


def _floats(values: Sequence[float | None] | None, n: int) -> np.ndarray:
    if values is None:
        return np.zeros(n)
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


def line_chart(curves: Sequence[Curve], title: str, xlabel: str, ylabel: str,
               width: int = 560, height: int = 320) -> str:
    """One line per curve, a translucent ±SEM band, axes with round ticks and a legend under
    the plot (so a narrow screen can scale the whole figure down)."""
    left, right, top = 58, 14, 44
    legend_rows = (len(curves) + 2) // 3
    bottom = 50 + 18 * legend_rows
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = [float(v) for c in curves for v in c.x] or [0.0, 1.0]
    ys, bands = [], []
    for c in curves:
        y = _floats(c.y, len(c.x))
        ys.append(y)
        bands.append(np.nan_to_num(_floats(c.sem, len(c.x))))
    finite = [(y - b, y + b) for y, b in zip(ys, bands, strict=True) if np.isfinite(y).any()]
    low = min((float(np.nanmin(lo)) for lo, _ in finite), default=0.0)
    high = max((float(np.nanmax(hi)) for _, hi in finite), default=1.0)
    xticks, yticks = covering_ticks(min(xs), max(xs)), covering_ticks(low, high)
    x0, x1, y0, y1 = xticks[0], xticks[-1], yticks[0], yticks[-1]

    head, _, rest = title.partition(" (")
    rest = f"({rest}" if rest else ""

    def px(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x0) / ((x1 - x0) or 1) * plot_w,
                top + (1 - (y - y0) / ((y1 - y0) or 1)) * plot_h)

    out = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
           f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
           f'<text x="4" y="16" class="ct">{escape(head)}</text>'
           f'<text x="4" y="33">{escape(rest)}</text>']
    for t in yticks:
        _, y = px(x0, t)
        out.append(f'<line x1="{left}" y1="{_num(y)}" x2="{left + plot_w}" y2="{_num(y)}" '
                   f'class="grid"/><text x="{left - 6}" y="{_num(y + 4)}" '
                   f'text-anchor="end">{_tick(t)}</text>')
    for t in xticks:
        x, _ = px(t, y0)
        out.append(f'<text x="{_num(x)}" y="{top + plot_h + 16}" '
                   f'text-anchor="middle">{_tick(t)}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" class="frame"/>')
    for i, (curve, y, band) in enumerate(zip(curves, ys, bands, strict=True)):
        colour_ = METHOD_COLOURS[i % len(METHOD_COLOURS)]
        x = np.asarray(curve.x, dtype=float)
        ok = np.isfinite(y)
        if ok.sum() >= 2 and band[ok].max() > 0:
            upper = [px(a, b) for a, b in zip(x[ok], (y + band)[ok], strict=True)]
            lower = [px(a, b) for a, b in zip(x[ok], (y - band)[ok], strict=True)]
            points = " ".join(f"{_num(a)},{_num(b)}" for a, b in upper + lower[::-1])
            out.append(f'<polygon points="{points}" fill="{colour_}" fill-opacity="0.18"/>')
        points = " ".join(f"{_num(a)},{_num(b)}" for a, b in
                          (px(a, b) for a, b in zip(x[ok], y[ok], strict=True)))
        out.append(f'<polyline points="{points}" fill="none" stroke="{colour_}" '
                   f'stroke-width="2"><title>{escape(curve.label)}</title></polyline>')
        if ok.sum() <= 30:
            out.extend(f'<circle cx="{_num(a)}" cy="{_num(b)}" r="2.5" fill="{colour_}"/>'
                       for a, b in (px(a, b) for a, b in zip(x[ok], y[ok], strict=True)))
        lx = left + (i % 3) * (plot_w / 3)
        ly = top + plot_h + 48 + 18 * (i // 3)
        out.append(f'<line x1="{_num(lx)}" y1="{ly - 4}" x2="{_num(lx + 20)}" y2="{ly - 4}" '
                   f'stroke="{colour_}" stroke-width="3"/><text x="{_num(lx + 25)}" '
                   f'y="{ly}">{escape(curve.label)}</text>')
    out.append(f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h + 30}" '
               f'text-anchor="middle">{escape(xlabel)}</text>')
    out.append(f'<text transform="translate(13 {top + plot_h / 2:.1f}) rotate(-90)" '
               f'text-anchor="middle">{escape(ylabel)}</text></svg>')
    return "".join(out)


def bar_chart(labels: Sequence[str], values: Sequence[float], title: str,
              unit: str = "", signed: bool = False, width: int = 560,
              limit: tuple[float, float] | None = None, bar: int = 16) -> str:
    """Horizontal bars, one per label, with its value printed; signed bars grow left (blue)
    or right (red) of a zero line. The label column is as wide as the longest label, up to
    half the room: longer labels wrap (three lines at most, then an ellipsis); the full label
    and its value are the row's tooltip."""
    values = [float(v) for v in values]
    value_w, top, line_h = 64, 26, 14
    room = (width - value_w) / 2
    label_w = min(room, max([text_width(str(name)) for name in labels] + [60.0]) + 12)
    wrapped = [wrap_label(str(name), label_w - 10) for name in labels]
    heights = [max(bar, line_h * len(lines)) for lines in wrapped]
    height = top + sum(h + 4 for h in heights) + 8
    plot_w = width - label_w - value_w
    low, high = limit if limit is not None else (
        min(0.0, *values) if values else 0.0, max(0.0, *values) if values else 1.0)
    span = (high - low) or 1.0
    zero = label_w + (0 - low) / span * plot_w
    out = [f'<svg class="chart bars" viewBox="0 0 {width} {height}" role="img" '
           f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
           f'<text x="4" y="16" class="ct">{escape(title)}</text>']
    y = top
    for name, v, lines, h in zip(labels, values, wrapped, heights, strict=True):
        end = label_w + (v - low) / span * plot_w
        x, w = min(zero, end), abs(end - zero)
        fill = ("#b2182b" if v >= 0 else "#2166ac") if signed else "#4c78a8"
        first = y + (h - line_h * len(lines)) / 2 + 11
        spans = "".join(f'<tspan x="{_num(label_w - 6)}" y="{_num(first + k * line_h)}">'
                        f'{escape(line)}</tspan>' for k, line in enumerate(lines))
        middle = y + h / 2 + 4
        out.append(f'<g><title>{escape(str(name))}: {number(v)}{escape(unit)}</title>'
                   f'<text text-anchor="end">{spans}</text>'
                   f'<rect x="{_num(x)}" y="{_num(y + (h - bar) / 2)}" width="{_num(w)}" '
                   f'height="{bar}" fill="{fill}"/><text x="{width - 4}" y="{_num(middle)}" '
                   f'text-anchor="end">{v:.3g}{escape(unit)}</text></g>')
        y += h + 4
    out.append(f'<line x1="{_num(zero)}" y1="{top - 2}" x2="{_num(zero)}" y2="{height - 6}" '
               f'stroke="#333"/></svg>')
    return "".join(out)


def series_chart(values: Sequence[float], scores: Sequence[float], title: str,
                 width: int = 560, height: int = 160) -> str:
    """A series as a line over a band coloured by its attribution (bwr: blue negative, red
    positive), one band slice per sample."""
    v = np.asarray(values, dtype=float)
    s = np.asarray(scores, dtype=float)
    n = len(v)
    left, top, band = 8, 22, 14
    plot_w, plot_h = width - 2 * left, height - top - band - 12
    lo, hi = (float(np.nanmin(v)), float(np.nanmax(v))) if n else (0.0, 1.0)
    span = (hi - lo) or 1.0
    colours = colour(s[None, :], "bwr", "minmax")[0] * 255 if n else np.zeros((0, 3))
    step = plot_w / max(n, 1)
    out = [f'<svg class="chart series" viewBox="0 0 {width} {height}" role="img" '
           f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
           f'<text x="{left}" y="15" class="ct">{escape(title)}</text>']
    for i in range(n):
        out.append(f'<rect x="{_num(left + i * step)}" y="{top + plot_h + 6}" '
                   f'width="{_num(step + 0.5)}" height="{band}" '
                   f'fill="{hex_colour(colours[i])}"/>')
    points = " ".join(f"{_num(left + (i + 0.5) * step)},"
                      f"{_num(top + (1 - (v[i] - lo) / span) * plot_h)}" for i in range(n))
    out.append(f'<polyline points="{points}" fill="none" stroke="#222" stroke-width="1.5"/>'
               f'</svg>')
    return "".join(out)


LEGEND_TEXT = {"bwr": ("negative", "0", "positive"), "jet": ("0", "|attribution|", "high"),
               "magma": ("0", "|attribution|", "high")}


def colour_legend(colormap: str, width: int = 240) -> str:
    """The colour map as a gradient bar with what its ends mean."""
    stops = np.linspace(0, 1, 11)
    values = stops * 2 - 1 if colormap == "bwr" else stops
    rgb = colour(values[None, :], colormap, "minmax")[0] * 255
    low, middle, high = LEGEND_TEXT.get(colormap, ("low", "", "high"))
    gid = f"legend-{colormap}"
    grad = "".join(f'<stop offset="{o:.2f}" stop-color="{hex_colour(c)}"/>'
                   for o, c in zip(stops, rgb, strict=True))
    return (f'<svg class="legend" viewBox="0 0 {width} 34" width="{width}" height="34" '
            f'role="img" xmlns="http://www.w3.org/2000/svg"><title>Colour map {colormap}: '
            f'{low} to {high}</title><defs><linearGradient id="{gid}">{grad}</linearGradient>'
            f'</defs><rect x="0" y="0" width="{width}" height="14" fill="url(#{gid})"/>'
            f'<text x="0" y="30">{low}</text><text x="{width / 2:.0f}" y="30" '
            f'text-anchor="middle">{middle}</text><text x="{width}" y="30" '
            f'text-anchor="end">{high}</text></svg>')
