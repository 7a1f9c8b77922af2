"""`--report` on attribute, pathway and evaluate, run in-process on the demo model."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from onnxpath import Explainer
from onnxpath.cli import main
from onnxpath.cli._common import build_preprocess
from onnxpath.cli.evaluate import scene_inputs
from onnxpath.io.render import colour, reduce_channels
from tests.report.conftest import METHODS, MODEL, SAMPLES
from tests.report.records import Elements


def run(capsys, *args):
    code = main([*map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def pixels(src: str, folder: Path) -> np.ndarray:
    data = (base64.b64decode(src.split(",", 1)[1]) if src.startswith("data:")
            else (folder / src).read_bytes())
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_attribute_report_shows_every_input_and_method(attribute_run, capsys):
    code, out, inputs = attribute_run
    capsys.readouterr()
    assert code == 1  # the unreadable input fails, the rest are processed
    page = out / "report.html"
    # one file: no folder of pictures beside it (.onnxpath holds the resume markers)
    assert sorted(p.name for p in out.iterdir()
                  if not p.name.endswith((".npy", ".png")) and p.name != ".onnxpath") == [
        "report.html"]
    doc = Elements(page.read_text())
    assert doc.problems == []
    rows = doc.find("section")
    names = sorted(p.name for p in inputs.iterdir())
    assert sorted(r["aria-label"] for r in rows) == names
    figures = [a["data-method"] for t, a in doc.tags if t == "figure"]
    assert figures == METHODS * len(names)
    # Every overlay is the PNG the run wrote, and every input picture is the input file.
    for img in doc.find("img"):
        alt = img["alt"]
        if alt.startswith("input image"):
            source = inputs / alt.removeprefix("input image ")
            expected = np.asarray(Image.open(source).convert("RGB"))
        else:
            method, stem = alt.split(" attribution for ")[0], alt.split(" for ")[1]
            stem = stem.split(",")[0].removesuffix(".png")
            expected = np.asarray(Image.open(out / f"{stem}.{method}.png").convert("RGB"))
        assert np.array_equal(pixels(img["src"], out), expected)
    assert len(doc.find("img")) == (len(names) - 1) * (1 + len(METHODS))
    text = page.read_text()
    assert text.count("unreadable.png") >= 2 and "error:" in text  # the failure shown in place


def test_attribute_report_folder_form_written_at_the_end(capsys, tmp_path):
    folder = tmp_path / "site"
    code, stdout, err = run(capsys, "attribute", MODEL, SAMPLES / "star_0.png",
                            SAMPLES / "ring_0.png", "-m", "gradient", "-o", tmp_path / "o",
                            "--report", f"{folder}/", "--report-at-end", "-q")
    assert code == 0, err
    doc = Elements((folder / "index.html").read_text())
    sources = [img["src"] for img in doc.find("img")]
    assert len(sources) == 4 and all((folder / s).is_file() for s in sources)


def test_attribute_report_without_out_draws_the_same_overlays(capsys, tmp_path):
    """No --out: no files but the page, whose overlays are those an --out run writes."""
    star = SAMPLES / "star_0.png"
    code, _, err = run(capsys, "attribute", MODEL, star, "-m", "gradient,gradcam",
                       "--colormap", "magma", "--report", tmp_path / "r.html", "-q")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]
    code, _, err = run(capsys, "attribute", MODEL, star, "-m", "gradient,gradcam",
                       "--colormap", "magma", "-o", tmp_path / "out", "-q")
    assert code == 0, err
    overlays = [img for img in Elements((tmp_path / "r.html").read_text()).find("img")
                if "attribution" in img["alt"]]
    assert len(overlays) == 2
    for img, method in zip(overlays, ["gradient", "gradcam"], strict=True):
        written = np.asarray(Image.open(tmp_path / "out" / f"star_0.{method}.png"))
        assert np.array_equal(pixels(img["src"], tmp_path), written)


@pytest.mark.parametrize("args, message", [
    (["--report-every", "0"], "--report-every must be at least 1"),
    (["--report", "notes.txt"], "give a .html file")])
def test_attribute_report_bad_options_exit_2_in_one_line(capsys, tmp_path, args, message):
    extra = args if "--report" in args else ["--report", str(tmp_path / "r.html"), *args]
    code, stdout, err = run(capsys, "attribute", MODEL, SAMPLES / "star_0.png", *extra)
    assert code == 2 and stdout == ""
    assert message in err and len(err.strip().splitlines()) == 1


def test_pathway_report_has_the_layer_table_and_kept_fraction_chart(capsys, tmp_path):
    page = tmp_path / "pathway.html"
    code, stdout, err = run(capsys, "pathway", MODEL, SAMPLES / "heart_0.png", "--json",
                            "--report", page)
    assert code == 0, err
    record = json.loads(stdout)
    assert record["outputs"]["report"] == str(page)
    doc = Elements(page.read_text())
    bars = [r for r in doc.find("rect")]
    assert len(bars) == len(record["layers"]) > 0
    widths = np.array([float(b["width"]) for b in bars])
    kept = np.array([r["kept_percent"] for r in record["layers"]])
    np.testing.assert_allclose(widths / widths.max(), kept / kept.max(), atol=0.01)
    text = page.read_text()
    for layer in record["layers"]:
        assert f"<th scope=\"row\">{layer['layer']}</th>" in text
        assert f"<td>{layer['kept']:,}</td>" in text
    assert f"{record['output_change']:.4f}" in text
    assert doc.find("img")[0]["alt"].startswith("input image")


def test_evaluate_report_has_the_table_every_curve_and_the_sanity_cascade(capsys, tmp_path):
    page, data = tmp_path / "eval.html", tmp_path / "eval.json"
    code, stdout, err = run(capsys, "evaluate", MODEL, "--scenes", "3", "-m",
                            "gradient,gradcam", "--ns", "1,16", "--samples", "4", "--step",
                            "512", "--sanity-steps", "2", "--road-fractions", "0.2,0.8",
                            "--json", data, "--report", page, "-q")
    assert code == 0, err
    report = json.loads(data.read_text())
    text = page.read_text()
    doc = Elements(text)
    assert doc.problems == []
    groups = {(c["metric"], c["measure"]) for c in report["curves"]}
    charts = [a for t, a in doc.tags if t == "svg" and "chart" in a.get("class", "")]
    assert len(charts) == len(groups) > 10
    # One line per method in each chart.
    assert len(doc.find("polyline")) == len(report["curves"])
    for method, columns in report["summary"].items():
        for entry in columns.values():
            if entry["mean"] is not None and entry["sem"] is not None:
                assert f"{entry['mean']:.3f} ± {entry['sem']:.3f}" in text, (method, entry)
    cascade = text.split("<h2>Sanity cascade</h2>")[1]
    for step, layer in report["sanity_layers"].items():
        assert f'<th scope="row">{step}</th><td>{layer}</td>' in cascade
    # The cascade's pictures: per method the original map, then one per step. The original
    # gradient map of the first scene, recomputed through the public API, is the first one.
    maps = [img for img in doc.find("img") if img.get("class") == "map"]
    assert len(maps) == 2 * (1 + len(report["sanity_layers"]))
    explainer = Explainer(MODEL)
    prep = build_preprocess(explainer, None)
    x, _ = scene_inputs(explainer, prep, 3, 0)
    heat = reduce_channels(explainer.attribute(x[:1], method="gradient").maps[0])
    expected = (colour(heat, "jet", "percentile") * 255).round()
    assert maps[0]["alt"] == "gradient: original map, first image"
    assert np.abs(pixels(maps[0]["src"], tmp_path) - expected).max() <= 1
