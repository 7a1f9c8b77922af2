"""The `pathway` report: the input, the summary, the per-layer table and a kept-fraction bar
chart, from the record `onnxpath pathway --json` prints."""

from __future__ import annotations

from collections.abc import Callable

from onnxpath.report.charts import bar_chart
from onnxpath.report.page import esc, page, table


def pathway_html(record: dict, url: Callable[[str], str], picture: str | None = None,
                 meta: dict | None = None) -> str:
    title = (meta or {}).get("title") or "onnxpath pathway report"
    label = record.get("label")
    target = f"class {record['target']}" + (f" ({label})" if label else "")
    facts = " · ".join(f"{esc(k)}: {esc(v)}" for k, v in (meta or {}).items() if k != "title")
    body = [f"<h1>{esc(title)}</h1>", f'<p class="meta">{facts}</p>']
    if picture is not None:
        body.append(f'<img src="{url(picture)}" alt="input image {esc(record["input"])}" '
                    'style="max-width:224px;width:100%;image-rendering:pixelated">')
    summary = [
        ["input", esc(record["input"])], ["target", esc(target)],
        ["probability", f"{record['prob']:.4f}"],
        ["probability on the pathway", f"{record['prob_masked']:.4f}"],
        ["output change |Δp|/p", f"{record['output_change']:.4f}"],
        ["neurons kept", f"{record['kept']:,} of {record['neurons']:,} "
                         f"({record['kept_percent']:.2f}%)"],
        ["prune", f"{record['prune_percent']:g}%, selection {esc(record['selection'])}"],
    ]
    body.append(table(["", "value"], summary, "summary"))
    layers = record.get("layers") or []
    body.append("<h2>Kept fraction per layer</h2>")
    body.append(bar_chart([str(r["layer"]) for r in layers],
                          [r["kept_percent"] for r in layers],
                          f"neurons kept per layer, % ({len(layers)} layers)", unit="%",
                          limit=(0.0, 100.0), width=760))
    body.append("<h2>Layers</h2>")
    rows = [[esc(r["layer"]), esc(r["op_type"]), f"{r['neurons']:,}", f"{r['kept']:,}",
             f"{r['kept_percent']:.1f}",
             "-" if r.get("dead_percent") is None else f"{r['dead_percent']:.1f}"]
            for r in layers]
    body.append(table(["layer", "op", "neurons", "kept", "kept %", "dead %"], rows,
                      "per-layer selection; dead: zero activations in the original network"))
    return page(title, "".join(body))
