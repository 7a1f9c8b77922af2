"""Pictures of non-image attributions, from the record fields that conventions.md defines:

- text: `tokens: [{"token", "score"}]` -> the tokens on a diverging background colour;
- tables: `features: [{"name", "value", "score"}]` -> a signed bar chart;
- series: `series: {"values": [...], "scores": [...]}` (or a list of those, one per channel)
  -> a line plot over a band coloured by the attribution.

`picture(record)` returns the HTML for whichever field a record carries, or None.
"""

from __future__ import annotations

import numpy as np

from onnxpath.io.render import colour
from onnxpath.report.charts import bar_chart, hex_colour, number, series_chart
from onnxpath.report.page import esc


def tokens_html(tokens: list[dict]) -> str:
    """Each token on bwr colour (blue negative, white 0, red positive), scaled to the largest
    |score|; the score is in the tooltip, and dark backgrounds get white text."""
    scores = np.array([float(t.get("score") or 0.0) for t in tokens], dtype=float)
    rgb = colour(scores[None, :], "bwr", "minmax")[0] * 255 if len(tokens) else []
    spans = []
    for token, score, c in zip(tokens, scores, rgb, strict=True):
        light = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] > 140
        text = str(token.get("token", ""))
        spans.append(f'<span style="background:{hex_colour(c)};color:'
                     f'{"#000" if light else "#fff"}" title="{esc(text)}: {score:.4g}">'
                     f'{esc(text)}</span>')
    return (f'<p class="tokens" aria-label="tokens coloured by attribution, blue negative, '
            f'red positive">{" ".join(spans)}</p>')


def features_html(features: list[dict], title: str = "feature attribution") -> str:
    names = [f"{f.get('name', i)} = {number(f.get('value', ''), 6)}"
             for i, f in enumerate(features)]
    scores = [float(f.get("score") or 0.0) for f in features]
    top = max((abs(s) for s in scores), default=1.0) or 1.0
    return bar_chart(names, scores, title, signed=True, limit=(-top, top), width=420)


def series_html(series: dict | list, title: str = "attribution over time") -> str:
    channels = series if isinstance(series, list) else [series]
    return "".join(series_chart(c.get("values", []), c.get("scores", []),
                                title + (f" (channel {i})" if len(channels) > 1 else ""),
                                width=420)
                   for i, c in enumerate(channels))


def picture(record: dict) -> str | None:
    if record.get("tokens"):
        return tokens_html(record["tokens"])
    if record.get("features"):
        return features_html(record["features"])
    if record.get("series"):
        return series_html(record["series"])
    return None
