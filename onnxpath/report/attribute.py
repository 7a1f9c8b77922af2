"""The `attribute` report: a grid of inputs × methods, built from the JSON-line records.

Each input is a row: its picture, the top-5 predictions, the target(s), errors in place; then
one panel per record (method, and class with --target topK) with the overlay, or the token,
feature or series picture of other modalities, the method's parameters, and for pathway the
kept percentage and output change. Filters (label, method) and a sort by probability run as a
few lines of plain JavaScript in the page.

`attribute_html` is a pure function of the rows; `AttributeReport` collects records as a batch
runs and rewrites the page atomically every N inputs, or only at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from onnxpath.report.charts import colour_legend
from onnxpath.report.files import LIMIT, ReportFiles
from onnxpath.report.modal import picture
from onnxpath.report.page import esc, page

ERRORS = "\u2063errors"  # the label filter's value for "inputs with an error"
SEP = "\u001f"  # separates labels in data-labels (no label contains it)


@dataclass
class Row:
    """One input: its picture (a key of ReportFiles, or None) and its records in order."""

    input: str
    index: int
    picture: str | None = None
    records: list[dict] = field(default_factory=list)
    pictures: list[str | None] = field(default_factory=list)  # per record

    @property
    def head(self) -> dict | None:
        """The record whose predictions describe the input (the first with any)."""
        return next((r for r in self.records if r.get("top")), None)

    def labels(self) -> list[str]:
        head = self.head
        found = [class_name(head["top"][0])] if head else []
        if any(r.get("error") for r in self.records):
            found.append(ERRORS)
        return found

    def prob(self) -> float | None:
        head = self.head
        return head["top"][0].get("prob") if head else None


def class_name(entry: dict) -> str:
    label = entry.get("label")
    c = entry.get("class", entry.get("target"))
    return str(label) if label not in (None, "") else f"class {c}"


def fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ",".join(fmt(v) for v in value)
    return str(value)


def params_text(params: dict) -> str:
    shown = [f"{k}={fmt(v)}" for k, v in sorted((params or {}).items())
             if v is not None and v is not False and k != "internal_batch_size"]
    return ", ".join(shown) or "defaults"


def _name(path: str) -> str:
    return Path(path).name or path


def panel(record: dict, key: str | None, url: Callable[[str], str], colormap: str) -> str:
    method = str(record.get("method"))
    name = _name(str(record.get("input", "")))
    parts = [f'<span class="method">{esc(method)}</span>']
    error = record.get("error")
    if record.get("target") is not None:
        what = class_name(record)
        prob = record.get("prob")
        parts.append(f"target {esc(what)}" + (f", p = {prob:.3f}" if prob is not None else ""))
    extras = record.get("extras") or {}
    if "kept_percent" in extras:
        parts.append(f"kept {extras['kept_percent']:.2f}% of neurons, output change "
                     f"{extras.get('output_change', float('nan')):.4f}")
    if extras.get("fallback_reason"):
        parts.append(f"fallback: {esc(extras['fallback_reason'])}")
    parts.append(f'<span class="params">{esc(params_text(record.get("params") or {}))}'
                 "</span>")
    if record.get("time_ms") is not None:
        parts.append(f"{record['time_ms']:.1f} ms")
    if error:
        parts.append(f'<span class="error" role="alert">error: {esc(error)}</span>')
    modal = None if error else picture(record)
    if modal is not None:
        body = modal
    elif key is not None:
        target = class_name(record) if record.get("target") is not None else "the prediction"
        body = (f'<img src="{url(key)}" alt="{esc(method)} attribution for {esc(name)}, '
                f'{esc(target)}: {esc(colormap)} colour map over the gray input" '
                '>')
    else:
        why = "no picture (error)" if error else "no picture of this input"
        body = f'<div class="noimg">{esc(why)}</div>'
    return (f'<figure data-method="{esc(method)}">{body}<figcaption>'
            f'{"<br>".join(parts)}</figcaption></figure>')


def row_html(row: Row, url: Callable[[str], str], colormap: str) -> str:
    name = _name(row.input)
    head = row.head
    info = [f'<h3 title="{esc(row.input)}">{esc(name)}</h3>']
    if row.picture is not None:
        info.append(f'<img src="{url(row.picture)}" alt="input image {esc(name)}">')
    elif not any(r.get("tokens") or r.get("features") or r.get("series")
                 for r in row.records):
        info.append('<div class="noimg">no picture of this input</div>')
    if head:
        lines = "".join(f"<tr><td>{esc(class_name(t))}</td><td>{t['prob']:.3f}</td></tr>"
                        if t.get("prob") is not None else
                        f"<tr><td>{esc(class_name(t))}</td><td>{t.get('logit', 0):.3g}</td>"
                        "</tr>" for t in head["top"])
        info.append(f'<table class="top"><caption>top {len(head["top"])}</caption>'
                    f'<thead><tr><th scope="col">class</th><th scope="col">p</th></tr>'
                    f"</thead><tbody>{lines}</tbody></table>")
        targets = list(dict.fromkeys(class_name(r) for r in row.records
                                     if r.get("target") is not None))
        info.append(f"<p>target: {esc(', '.join(targets))}</p>")
    errors = sorted({r["error"] for r in row.records if r.get("error")})
    info.extend(f'<p class="error" role="alert">{esc(e)}</p>' for e in errors
                if all(r.get("error") for r in row.records))
    prob = row.prob()
    cells = "".join(panel(r, k, url, colormap)
                    for r, k in zip(row.records, row.pictures, strict=True))
    return (f'<section class="row" data-index="{row.index}" '
            f'data-prob="{"" if prob is None else f"{prob:.6f}"}" '
            f'data-labels="{esc(SEP.join(row.labels()))}" aria-label="{esc(name)}">'
            f'<div class="info">{"".join(info)}</div><div class="cells">{cells}</div>'
            "</section>")


def controls(rows: list[Row]) -> str:
    counts: dict[str, int] = {}
    for row in rows:
        for label in row.labels():
            counts[label] = counts.get(label, 0) + 1
    options = ['<option value="*">all labels</option>']
    options += [f'<option value="{esc(label)}">{esc(label)} ({n})</option>'
                for label, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
                if label != ERRORS]
    if ERRORS in counts:
        options.append(f'<option value="{ERRORS}">inputs with errors ({counts[ERRORS]})'
                       "</option>")
    methods: list[str] = []
    for row in rows:
        for r in row.records:
            if str(r.get("method")) not in methods:
                methods.append(str(r.get("method")))
    boxes = "".join(f'<label><input type="checkbox" name="method" value="{esc(m)}" checked> '
                    f"{esc(m)}</label>" for m in methods)
    return ('<form class="controls" aria-label="filters" onsubmit="return false">'
            '<label for="f-label">Predicted label</label><select id="f-label">'
            f'{"".join(options)}</select>'
            f'<fieldset><legend>Methods</legend>{boxes}</fieldset>'
            '<label for="f-sort">Sort</label><select id="f-sort">'
            '<option value="index">input order</option>'
            '<option value="prob-desc">probability, high first</option>'
            '<option value="prob-asc">probability, low first</option></select>'
            '<span id="count" class="count" aria-live="polite"></span></form>')


def attribute_html(rows: list[Row], url: Callable[[str], str], meta: dict | None = None,
                   colormap: str = "jet", running: bool = False,
                   render: Callable[[Row], str] | None = None) -> str:
    """The whole page for these rows. `url(key)` resolves a picture key to its src; `render`
    may replace `row_html` (a cache of finished rows)."""
    render = render or (lambda row: row_html(row, url, colormap))
    meta = meta or {}
    panels = sum(len(r.records) for r in rows)
    failed = sum(1 for r in rows for rec in r.records if rec.get("error"))
    title = meta.get("title") or "onnxpath attribute report"
    facts = [f"{len(rows)} inputs, {panels} panels, {failed} errors"]
    facts += [f"{esc(k)}: {esc(v)}" for k, v in meta.items() if k != "title"]
    body = [f"<h1>{esc(title)}</h1>", f'<p class="meta">{" · ".join(facts)}</p>']
    if running:
        body.append('<p class="banner" role="status">Still running: this page reloads itself '
                    "as inputs finish.</p>")
    legends = [colour_legend(colormap)]
    modal = ("tokens", "features", "series")
    if colormap != "bwr" and any(r.get(k) for row in rows for r in row.records for k in modal):
        legends.append(colour_legend("bwr"))  # tokens, features and series are signed
    body.append(f'<div class="legends" aria-label="colour legend">{"".join(legends)}</div>')
    body.append(controls(rows))
    body.append(f'<div id="rows">{"".join(render(r) for r in rows)}</div>')
    return page(title, "".join(body), script=True, refresh=15 if running else None)


class AttributeReport:
    """Collects records (`add`, usable as an `emit` hook) and writes the page atomically
    every `every` finished inputs, unless `at_end`; `close()` writes the final page."""

    def __init__(self, target: Path | str, every: int = 25, at_end: bool = False,
                 meta: dict | None = None, colormap: str = "jet", limit: int = LIMIT,
                 note: Callable[[str], None] | None = None, share: float = 0.1):
        self.files = ReportFiles(target, limit, note)
        self.every = max(1, every)
        # Rewrites cost O(page size): one is put off while the last took more than `share`
        # of the time since, so watching a 500-input batch costs it at most ~10%.
        self.share = share
        self._last_write = (0.0, 0.0)  # (when it ended, how long it took), perf_counter
        self.at_end = at_end
        self.meta = meta or {}
        self.colormap = colormap
        self.rows: dict[str, Row] = {}
        self.writes = 0
        # Finished rows' HTML, made once: a rewrite then costs a join, not a re-render
        # (500 inputs: 0.5 s per rewrite otherwise). Pictures moving to files clear it.
        self._cache: dict[str, str] = {}
        self._cache_linked = False
        self._overlays: dict[int, str] = {}  # id(record) -> picture key, until the record comes

    def add(self, record: dict) -> None:
        key = str(record.get("input"))
        row = self.rows.get(key)
        if row is None:
            finished = len(self.rows)
            if finished and not self.at_end and finished % self.every == 0 and self._due():
                self.write(running=True)
            row = Row(key, len(self.rows))
            row.picture = self.files.add_file(key)
            self.rows[key] = row
        self._cache.pop(key, None)  # the same input given twice: its row grows again
        overlay = (record.get("outputs") or {}).get("png")
        given = self._overlays.pop(id(record), None)
        row.records.append(record)
        row.pictures.append(given if given is not None else self.files.add_file(overlay)
                            if overlay and not record.get("error") else None)

    def overlay(self, record: dict, image: Image.Image) -> None:
        """The overlay of a record about to be added, for runs that write no PNG files
        (`Pipeline.overlay_hook`)."""
        self._overlays[id(record)] = self.files.add_image(image)

    def _due(self) -> bool:
        ended, took = self._last_write
        return time.perf_counter() - ended >= took / self.share if self.share > 0 else True

    def write(self, running: bool = False) -> Path:
        start = time.perf_counter()
        try:
            return self._write(running)
        finally:
            self._last_write = (time.perf_counter(), time.perf_counter() - start)

    def _write(self, running: bool) -> Path:
        rows = list(self.rows.values())
        self.writes += 1
        if self.files.linked != self._cache_linked:
            self._cache.clear()
            self._cache_linked = self.files.linked
        current = rows[-1].input if rows and running else None

        def render(row: Row, url: Callable[[str], str]) -> str:
            html = self._cache.get(row.input)
            if html is None:
                html = row_html(row, url, self.colormap)
                if row.input != current:  # the current row may still get records
                    self._cache[row.input] = html
            return html

        return self.files.write(lambda url: attribute_html(
            rows, url, self.meta, self.colormap, running, lambda row: render(row, url)))

    def close(self) -> Path:
        return self.write(running=False)

    @property
    def page(self) -> Path:
        return self.files.page
