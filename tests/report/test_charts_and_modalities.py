"""SVG charts and the pictures of text, tabular and series records (synthetic records with the
fields conventions.md defines: tokens, features, series)."""

from __future__ import annotations

import numpy as np
import pytest

from onnxpath.report import AttributeReport
from onnxpath.report.charts import Curve, bar_chart, colour_legend, line_chart, series_chart
from onnxpath.report.modal import picture
from tests.report.records import Elements

# Matplotlib's RdBu_r ends and middle: the diverging map's definition, not our code's output.
DARK_RED, DARK_BLUE = (0x67, 0x00, 0x1F), (0x05, 0x30, 0x61)


def rgb(text: str) -> tuple[int, int, int]:
    text = text.lstrip("#")
    return tuple(int(text[i:i + 2], 16) for i in (0, 2, 4))


def points(attr: str) -> np.ndarray:
    return np.array([[float(v) for v in p.split(",")] for p in attr.split()])


def close_to(a, b, tol=3) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def test_tokens_are_coloured_by_sign_and_size_of_their_score():
    tokens = [{"token": "good", "score": 2.0}, {"token": "movie", "score": 0.0},
              {"token": "<bad>", "score": -1.0}, {"token": "ok", "score": 0.5}]
    html = picture({"tokens": tokens})
    doc = Elements(html)
    spans = doc.find("span")
    assert len(spans) == 4
    colours = [rgb(s["style"].split("background:")[1].split(";")[0]) for s in spans]
    assert close_to(colours[0], DARK_RED)  # the largest |score| takes the end of the map
    assert min(colours[1]) > 240  # zero is white
    blue = colours[2]  # -1 of max 2: halfway to dark blue
    assert blue[2] > blue[0] + 60
    assert colours[3][0] > colours[3][2]  # small positive: light red
    assert "&lt;bad&gt;" in html and "<bad>" not in html  # tokens are escaped
    assert spans[0]["title"] == "good: 2"
    assert spans[0]["style"].endswith("color:#fff")  # dark background, light text


def test_features_bar_lengths_follow_the_scores():
    features = [{"name": "age", "value": 42, "score": 0.8}, {"name": "income", "value": 1.5,
                "score": -0.4}, {"name": "zip", "value": "x", "score": 0.2}]
    doc = Elements(picture({"features": features}))
    bars = doc.find("rect")
    widths = np.array([float(b["width"]) for b in bars])
    assert widths / widths[0] == pytest.approx([1.0, 0.5, 0.25], abs=0.01)
    zero = float(doc.find("line")[-1]["x1"])
    assert float(bars[0]["x"]) == pytest.approx(zero, abs=0.1)  # positive grows right
    assert float(bars[1]["x"]) + widths[1] == pytest.approx(zero, abs=0.1)  # negative left
    assert [b["fill"] for b in bars] == ["#b2182b", "#2166ac", "#b2182b"]
    assert "age = 42" in "".join(doc.text)


def test_series_line_follows_the_values_and_the_band_the_scores():
    values = np.sin(np.linspace(0, 6, 40))
    scores = np.linspace(-1, 1, 40)
    doc = Elements(series_chart(values, scores, "s"))
    line = points(doc.find("polyline")[0]["points"])
    assert len(line) == 40
    assert np.all(np.diff(line[:, 0]) > 0)
    # SVG y grows downwards: the drawn heights are the values, reversed and rescaled.
    assert np.corrcoef(-line[:, 1], values)[0, 1] > 0.9999
    band = [rgb(r["fill"]) for r in doc.find("rect")]
    assert len(band) == 40
    assert close_to(band[0], DARK_BLUE) and close_to(band[-1], DARK_RED)
    multi = picture({"series": [{"values": [1, 2], "scores": [0, 1]},
                                {"values": [3, 1], "scores": [1, 0]}]})
    assert multi.count("<svg") == 2 and "channel 1" in multi


def test_line_chart_draws_every_point_inside_its_frame():
    x = [0.1, 0.2, 0.3, 0.5, 0.7, 0.9]  # 0.9 lies past a 0.2-step tick at 0.8
    curves = [Curve("a", x, [0.2, 0.4, 0.5, 0.55, 0.9, 0.97], [0.01] * 6),
              Curve("b", x, [0.1, None, 0.3, 0.3, 0.2, 0.1])]
    doc = Elements(line_chart(curves, "title (detail)", "fraction", "p"))
    frame = doc.find("rect", class_="frame")[0]
    left, top = float(frame["x"]), float(frame["y"])
    right, bottom = left + float(frame["width"]), top + float(frame["height"])
    lines = [points(p["points"]) for p in doc.find("polyline")]
    assert [len(p) for p in lines] == [6, 5]  # the undefined value is left out
    for p in lines:
        assert np.all((p[:, 0] >= left) & (p[:, 0] <= right))
        assert np.all((p[:, 1] >= top) & (p[:, 1] <= bottom))
    # The x scale is linear: pixel positions are an affine map of the data.
    fit = np.polyval(np.polyfit(x, lines[0][:, 0], 1), x)
    assert np.abs(fit - lines[0][:, 0]).max() < 0.1  # rounding to 0.1 px
    assert len(doc.find("polygon")) == 1  # a band only where there is a standard error
    assert doc.find("title")[0] is not None and "title (detail)" in "".join(doc.text)


@pytest.mark.parametrize("colormap, ends", [("bwr", (DARK_BLUE, DARK_RED)),
                                           ("jet", ((0, 0, 128), (128, 0, 0)))])
def test_colour_legend_runs_from_one_end_of_the_map_to_the_other(colormap, ends):
    doc = Elements(colour_legend(colormap))
    stops = [rgb(s["stop-color"]) for s in doc.find("stop")]
    assert close_to(stops[0], ends[0], 4) and close_to(stops[-1], ends[1], 4)
    assert "negative" in "".join(doc.text) if colormap == "bwr" else "high" in "".join(doc.text)


def test_bar_chart_keeps_long_names_in_tooltips():
    name = "/features/denseblock4/denselayer16/relu2/Relu"
    doc = Elements(bar_chart([name], [42.0], "kept", unit="%", limit=(0, 100)))
    zero = float(doc.find("rect")[0]["x"])  # the label column ends where the bars start
    assert float(doc.find("rect")[0]["width"]) == pytest.approx(0.42 * (560 - zero - 64), 0.01)
    assert any(name in t for t in doc.text)


def test_report_rows_of_other_modalities_show_their_pictures(tmp_path):
    """Records as the text and table inputs will emit them: no picture files at all."""
    base = {"method": "gradient", "target": 1, "label": "positive", "logit": 1.0,
            "prob": 0.8, "top": [{"class": 1, "label": "positive", "logit": 1.0,
                                  "prob": 0.8}], "outputs": {}, "params": {},
            "time_ms": 1.0, "error": None, "extras": {}}
    report = AttributeReport(tmp_path / "r.html")
    report.add({**base, "input": "reviews.txt:1",
                "tokens": [{"token": "great", "score": 1.0}]})
    report.add({**base, "input": "table.csv:1",
                "features": [{"name": "age", "value": 3, "score": -1.0}]})
    report.add({**base, "input": "ecg.npy", "series": {"values": [0, 1, 0], "scores": [0, 1, 0]}})
    text = report.close().read_text()
    doc = Elements(text)
    assert doc.problems == []
    assert len(doc.find("section")) == 3 and not doc.find("img")
    assert 'class="tokens"' in text and 'class="chart bars"' in text
    assert 'class="chart series"' in text and "no picture" not in text
    legends = [svg for svg in doc.find("svg") if svg.get("class") == "legend"]
    assert len(legends) == 2  # the overlays' map and the signed one of the other pictures
