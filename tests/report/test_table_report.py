"""The table report (issue "Trust ..."): feature names show whole, wrapped where long (an
ellipsis only past three lines, the full name in the row's tooltip), and numbers with a
sensible precision, never float32's 17 digits ("34.099998474121094")."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from onnxpath.cli import main
from onnxpath.report.charts import bar_chart, number, text_width
from onnxpath.report.modal import picture

ROOT = Path(__file__).resolve().parents[2]
SVG = "{http://www.w3.org/2000/svg}"
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
LONG_DIGITS = re.compile(r"\d\.\d{7,}")


def width(text: str) -> float:
    """The text's width at 12 px in DejaVu Sans where it is installed (the widest of the
    usual fonts), else the chart's own estimate."""
    if FONT.exists():
        from PIL import ImageFont
        return ImageFont.truetype(str(FONT), 12).getlength(text)
    return text_width(text)


def rows(svg: str) -> list[tuple[str, list[tuple[float, str]]]]:
    """(tooltip, [(x, line)]) of every bar of a bar chart."""
    root = ET.fromstring(svg)
    out = []
    for g in root.iter(f"{SVG}g"):
        lines = [(float(t.get("x")), t.text or "") for t in g.iter(f"{SVG}tspan")]
        out.append((g.find(f"{SVG}title").text, lines))
    return out


def bars_start(svg: str) -> float:
    return min(float(r.get("x")) for r in ET.fromstring(svg).iter(f"{SVG}rect"))


@pytest.mark.parametrize("value, digits, shown", [
    (34.099998474121094, 6, "34.1"), (89.69999694824219, 6, "89.7"), (4.0, 6, "4"),
    (52341.5, 6, "52341.5"), (-0.010087328962981701, 4, "-0.01009"), (2.6619575, 4, "2.662"),
    (1.5e-07, 4, "1.5e-07"), ("yes", 4, "yes"), (3, 4, "3")])
def test_numbers_read_as_a_person_writes_them(value, digits, shown):
    assert number(value, digits) == shown


def test_long_feature_names_show_whole_and_values_are_rounded():
    features = [{"name": "average_monthly_income", "value": 89.69999694824219,
                 "score": -0.010087328962981701},
                {"name": "age_in_years_at_signup", "value": 34.099998474121094,
                 "score": 2.6619575023651123},
                {"name": "tenure", "value": 3.0, "score": 0.5}]
    svg = picture({"features": features})
    assert not LONG_DIGITS.search(svg), LONG_DIGITS.search(svg)
    found = rows(svg)
    assert [title for title, _ in found] == ["average_monthly_income = 89.7: -0.01009",
                                             "age_in_years_at_signup = 34.1: 2.662",
                                             "tenure = 3: 0.5"]
    start = bars_start(svg)
    for (title, lines), feature in zip(found, features, strict=True):
        shown = "".join(line for _, line in lines).replace(" ", "")
        assert shown == title.rsplit(":", 1)[0].replace(" ", "")  # every character shows
        assert feature["name"].replace(" ", "") in shown
        for x, line in lines:  # anchored at its end: it must fit left of the bars, on screen
            assert x <= start and x - width(line) >= 0, (line, x, width(line))


def test_a_name_past_three_lines_ends_in_an_ellipsis_with_the_full_name_in_its_tooltip():
    name = "x" * 120
    svg = bar_chart([name], [1.0], "features", signed=True, width=420)
    [(title, lines)] = rows(svg)
    assert title == f"{name}: 1" and len(lines) == 3 and lines[-1][1].endswith("…")
    assert all(x - width(line) >= 0 for x, line in lines)


def test_the_table_report_of_the_shipped_churn_model(tmp_path, capsys):
    """`onnxpath attribute churn.onnx rows.csv --report r.html` with long column names."""
    csv = tmp_path / "rows.csv"
    csv.write_text("age_in_years_at_signup,tenure_months,average_monthly_income,"
                   "support_calls,late_payments,contract_years\n34.1,3.3,89.7,4,2,0\n")
    report = tmp_path / "r.html"
    code = main(["attribute", str(ROOT / "models" / "examples" / "churn.onnx"), str(csv),
                 "--report", str(report), "-o", str(tmp_path / "out"), "-q"])
    capsys.readouterr()
    assert code == 0
    html = report.read_text()
    assert not LONG_DIGITS.search(html), LONG_DIGITS.search(html)
    svg = re.search(r'<svg class="chart bars".*?</svg>', html).group(0)
    found = rows(svg)
    names = ["age_in_years_at_signup = 34.1", "tenure_months = 3.3",
             "average_monthly_income = 89.7", "support_calls = 4", "late_payments = 2",
             "contract_years = 0"]
    assert [title.rsplit(":", 1)[0] for title, _ in found] == names
    for (_, lines), name in zip(found, names, strict=True):
        assert "".join(line for _, line in lines).replace(" ", "") == name.replace(" ", "")
