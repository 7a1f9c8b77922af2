"""The attribute report built from synthetic records: the grid, the facts shown, the filters'
raw material, incremental writing, and the inline/folder forms."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from onnxpath.errors import OutputError
from onnxpath.report import LIMIT, AttributeReport
from tests.report.records import METHODS, Elements, records


def build(tmp_path, recs, target=None, **kwargs) -> AttributeReport:
    report = AttributeReport(target or tmp_path / "report.html", **kwargs)
    for record in recs:
        report.add(record)
    report.close()
    return report


def decoded(src: str) -> Image.Image:
    assert src.startswith("data:image/")
    return Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))


def test_every_input_and_method_has_a_panel_with_its_own_picture(tmp_path):
    recs = records(tmp_path, 4)
    page = build(tmp_path, recs).page
    doc = Elements(page.read_text())
    assert doc.problems == [] and doc.stack == []
    rows = doc.find("section")
    assert len(rows) == 4
    figures = [a for t, a in doc.tags if t == "figure"]
    assert [f["data-method"] for f in figures] == METHODS * 4
    images = doc.find("img")
    assert len(images) == 4 + 12  # one input picture per row, one overlay per panel
    assert all(img.get("alt") for img in images)
    # The pictures are the record's own files, pixel for pixel (32 px: not shrunk).
    overlays = [img for img in images if "attribution" in img["alt"]]
    for img, record in zip(overlays, recs, strict=True):
        expected = np.asarray(Image.open(record["outputs"]["png"]).convert("RGB"))
        assert np.array_equal(np.asarray(decoded(img["src"]).convert("RGB")), expected)
        assert record["method"] in img["alt"]
    assert not list(tmp_path.glob("*.part")) and not (tmp_path / "report_files").exists()


def test_top5_targets_pathway_facts_params_and_errors_are_shown(tmp_path):
    recs = records(tmp_path, 3, failing={1})
    text = build(tmp_path, recs).page.read_text()
    doc = Elements(text)
    for record in recs:
        if record["error"]:
            continue
        for entry in record["top"]:
            assert f"<td>{entry['label']}</td><td>{entry['prob']:.3f}</td>" in text
        if record["method"] == "pathway":
            kept, change = record["extras"]["kept_percent"], record["extras"]["output_change"]
            assert f"kept {kept:.2f}% of neurons, output change {change:.4f}" in text
    assert "prune_percent=85, seed=0" in text
    assert text.count("target circle, p = 0.700") == 3  # input 0: one per method
    # The failed input: its error in place, in every panel and in the row, and no picture.
    failed = [s for s in doc.find("section") if s["aria-label"] == "input_001.png"]
    assert failed and failed[0]["data-prob"] == ""
    assert text.count("truncated file") == 3 + 1
    assert len(doc.find("img")) == 3 + 6


def test_filter_options_and_sort_keys_match_the_records(tmp_path):
    recs = records(tmp_path, 7, failing={5})
    doc = Elements(build(tmp_path, recs).page.read_text())
    rows = doc.find("section")
    expected = {}
    for record in recs:
        expected.setdefault(record["input"], record)
    for row, (_, record) in zip(rows, expected.items(), strict=True):
        labels = row["data-labels"].split("\u001f")
        if record["error"]:
            assert labels == ["\u2063errors"]
        else:
            assert labels == [record["top"][0]["label"]]
            assert float(row["data-prob"]) == pytest.approx(record["top"][0]["prob"])
    options = [o["value"] for o in doc.find("option")]
    assert options[:4] == ["*", "circle", "square", "star"]  # by count: 2 (5 failed), 2, 2
    assert "\u2063errors" in options
    assert [b["value"] for b in doc.find("input", name="method")] == METHODS


def test_rewritten_every_n_inputs_and_once_with_at_end(tmp_path):
    recs = records(tmp_path, 7)
    seen = []

    class Watching(AttributeReport):
        def write(self, running=False):
            page = super().write(running)
            seen.append((running, page.read_text().count("<section")))
            return page

    report = Watching(tmp_path / "r.html", every=3, share=0)
    for record in recs:
        report.add(record)
    report.close()
    # After inputs 3 and 6 (written when the next input starts), then the final page.
    assert seen == [(True, 3), (True, 6), (False, 7)]
    running = (tmp_path / "r.html").read_text()
    assert 'http-equiv="refresh"' not in running  # the final page stops reloading
    seen.clear()
    report = Watching(tmp_path / "end.html", every=1, at_end=True)
    for record in recs:
        report.add(record)
    report.close()
    assert seen == [(False, 7)]


def test_a_running_page_reloads_itself_and_says_so(tmp_path):
    report = AttributeReport(tmp_path / "r.html")
    for record in records(tmp_path, 1):
        report.add(record)
    text = report.write(running=True).read_text()
    assert 'http-equiv="refresh"' in text and "Still running" in text


def test_folder_form_writes_index_and_linked_pictures(tmp_path):
    recs = records(tmp_path, 2)
    report = build(tmp_path, recs, target=f"{tmp_path / 'site'}/")
    assert report.page == tmp_path / "site" / "index.html"
    doc = Elements(report.page.read_text())
    sources = [img["src"] for img in doc.find("img")]
    assert len(sources) == 2 + 6 and all(s.startswith("assets/") for s in sources)
    for src in sources:
        assert Image.open(tmp_path / "site" / src).width == 32


def test_switches_to_linked_pictures_past_the_limit(tmp_path):
    recs = records(tmp_path, 6)
    notes = []
    report = build(tmp_path, recs, limit=2_000, note=notes.append)
    text = report.page.read_text()
    assert "data:image" not in text
    sources = [img["src"] for img in Elements(text).find("img")]
    assert len(sources) == 6 + 18 and all(s.startswith("report_files/") for s in sources)
    assert all((tmp_path / s).is_file() for s in sources)
    assert len(notes) == 1 and "report_files" in notes[0]


def test_500_inputs_stay_inline_under_50_mb(tmp_path):
    """500 inputs × 3 methods of 32 px pictures: one file, far below the limit."""
    recs = records(tmp_path, 500)
    report = build(tmp_path, recs)
    size = report.page.stat().st_size
    assert report.files.inline_bytes < size < LIMIT
    text = report.page.read_text()
    assert text.count("<figure") == 1500 and text.count("data:image/") == 2000
    assert not (tmp_path / "report_files").exists()


def test_500_large_inputs_switch_to_the_folder_form(tmp_path):
    """Pictures of ~60 kB (the limit scaled down 100x with the pictures): the page switches
    to linked files by itself and stays small."""
    recs = records(tmp_path, 500, methods=["gradient"], size=8)
    report = AttributeReport(tmp_path / "report.html", limit=LIMIT // 100, every=100)
    noise = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    big = tmp_path / "noise.png"
    Image.fromarray(noise).save(big)
    for record in recs:
        record["outputs"]["png"] = str(big)
        report.add(record)
    report.close()
    assert report.files.linked
    assert report.page.stat().st_size < 2_000_000
    assert len(list((tmp_path / "report_files").iterdir())) == 1000


def test_not_html_is_a_usage_problem(tmp_path):
    with pytest.raises(OutputError, match="give a .html file"):
        AttributeReport(tmp_path / "report.pdf")
    (tmp_path / "blocker").write_text("")
    with pytest.raises(OutputError, match="is a file"):
        AttributeReport(tmp_path / "blocker" / "report.html")


def test_pictures_go_in_as_they_are_or_shrunk(tmp_path):
    from onnxpath.report.files import MAX_SIDE, read_picture

    small = records(tmp_path, 1, methods=["gradient"])[0]["outputs"]["png"]
    data, mime = read_picture(small)
    assert data == Path(small).read_bytes() and mime == "image/png"
    rng = np.random.default_rng(0)
    photo = tmp_path / "photo.jpg"
    smooth = Image.fromarray((rng.random((30, 40, 3)) * 255).astype(np.uint8))
    smooth.resize((2000, 1500), Image.Resampling.BICUBIC).save(photo, quality=95)
    data, mime = read_picture(photo)
    shrunk = Image.open(io.BytesIO(data))
    assert max(shrunk.size) == MAX_SIDE and shrunk.size == (256, 192)
    # The same picture, smaller: the mean colours agree with a plain resize of the photo.
    expected = np.asarray(Image.open(photo).convert("RGB").resize(shrunk.size), float)
    assert np.abs(np.asarray(shrunk.convert("RGB"), float) - expected).mean() < 6
    (tmp_path / "notes.txt").write_text("not a picture")
    assert read_picture(tmp_path / "notes.txt") is None
    assert read_picture(tmp_path / "missing.png") is None


def test_a_report_that_cannot_be_written_is_one_clear_error(tmp_path, monkeypatch):
    report = AttributeReport(tmp_path / "r.html")
    report.add(records(tmp_path, 1)[0])

    def full(path, data):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr("onnxpath.report.files.write_atomic", full)
    with pytest.raises(OutputError, match="cannot write the report: No space left on device"):
        report.close()


@pytest.mark.parametrize("limit", [LIMIT, 3_000])  # inline throughout; switching midway
def test_incremental_pages_equal_a_fresh_render(tmp_path, limit):
    from onnxpath.report import attribute_html

    recs = records(tmp_path, 9, failing={4})
    recs += [dict(r, method="again") for r in recs[:3]]  # the first input given twice
    report = AttributeReport(tmp_path / "r.html", every=2, limit=limit, share=0)
    for record in recs:
        report.add(record)
    final = report.close().read_text()
    assert report.writes == 5
    fresh = attribute_html(list(report.rows.values()), report.files.url, report.meta,
                           report.colormap)
    assert final == fresh
    assert final.count('data-method="again"') == 3


def test_rewrites_are_put_off_while_they_would_dominate_the_run(tmp_path, monkeypatch):
    """A fake clock: each input takes 1 s, each write 3 s. With share 0.1 a write is due 30 s
    after the last one ended, so of the writes due every 2 inputs few are made."""
    clock = [0.0]
    monkeypatch.setattr("onnxpath.report.attribute.time.perf_counter", lambda: clock[0])
    recs = records(tmp_path, 60, methods=["gradient"])
    written = []

    class Slow(AttributeReport):
        def _write(self, running):
            clock[0] += 3.0
            written.append(len(self.rows))
            return super()._write(running)

    report = Slow(tmp_path / "r.html", every=2, share=0.1)
    for record in recs:
        clock[0] += 1.0
        report.add(record)
    report.close()
    # At 2 inputs (t = 3, nothing written yet; it ends at t = 6). Input k then starts at
    # t = k + 4, and the next write is due at t >= 36: k = 32. It ends at 39; due at 69,
    # past the last input (k = 59, t = 66): then only the final page.
    assert written == [2, 32, 60]
