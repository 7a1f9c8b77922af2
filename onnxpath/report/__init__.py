"""HTML reports of a run: pure functions from records to one self-contained page (pictures as
data URIs, no network), and the writers the commands call with `--report PATH`. Imports
`evaluate` (its chart vocabulary), `io` and below; the run loop calls it through a hook, never
the reverse."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from onnxpath.report.attribute import AttributeReport, Row, attribute_html
from onnxpath.report.evaluate import evaluate_html
from onnxpath.report.files import LIMIT, ReportFiles
from onnxpath.report.pathway import pathway_html

__all__ = ["LIMIT", "AttributeReport", "ReportFiles", "Row", "attribute_html", "evaluate_html",
           "pathway_html", "write_evaluate_report", "write_pathway_report"]


def write_pathway_report(target: Path | str, record: dict, meta: dict | None = None,
                         limit: int = LIMIT, note: Callable[[str], None] | None = None) -> Path:
    """The `pathway` record as a page (with the input's picture when it is an image)."""
    files = ReportFiles(target, limit, note)
    key = files.add_file(str(record.get("input", "")))
    return files.write(lambda url: pathway_html(record, url, key, meta))


def write_evaluate_report(target: Path | str, data: dict, meta: dict | None = None,
                          cascade: dict | None = None, limit: int = LIMIT,
                          note: Callable[[str], None] | None = None) -> Path:
    """`Report.as_json()` as a page: the table, every curve (inline SVG), the sanity cascade
    with `cascade` ({method: [H×W map, ...]}, the original first) drawn as pictures."""
    from PIL import Image

    from onnxpath.io.render import colour

    files = ReportFiles(target, limit, note)
    pictures = {}
    for method, maps in (cascade or {}).items():
        pictures[method] = [files.add_image(Image.fromarray(
            (colour(m, "jet", "percentile") * 255).round().astype("uint8"))) for m in maps]
    return files.write(lambda url: evaluate_html(data, meta, pictures, url))
