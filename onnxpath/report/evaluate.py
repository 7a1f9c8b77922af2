"""The `evaluate` report, from `Report.as_json()`: the methods × metrics table (best per
column marked), every curve as an inline SVG with its standard-error band, and the sanity
cascade (which layer each step randomised, and how alike the maps stayed)."""

from __future__ import annotations

from collections.abc import Callable

from onnxpath.evaluate.plot import TITLES
from onnxpath.evaluate.report import figure
from onnxpath.report.charts import Curve, colour_legend, line_chart
from onnxpath.report.page import esc, page, table


def _cell(entry: dict | None) -> tuple[str, float | None]:
    if entry is None or entry.get("mean") is None:
        return ("-" if entry is None else "n/a"), None
    mean, sem = entry["mean"], entry.get("sem")
    return (f"{figure(mean)} ± {figure(sem)}" if sem is not None else figure(mean)), mean


def summary_table(data: dict) -> str:
    summary = data.get("summary", {})
    methods = data.get("methods", list(summary))
    columns: list[str] = []
    better: dict[str, str] = {}
    meaning: dict[str, str] = {}
    for per_method in summary.values():
        for column, entry in per_method.items():
            if column not in columns:
                columns.append(column)
            better[column] = entry.get("better", "")
            meaning[column] = entry.get("meaning", "")
    header = ["method"] + [f'<abbr title="{esc(meaning[c])}">{esc(c)}</abbr> '
                           f'<span aria-label="{esc(better[c])} is better">'
                           f'{"↓" if better[c] == "lower" else "↑"}</span>' for c in columns]
    cells = {m: [_cell(summary.get(m, {}).get(c)) for c in columns] for m in methods}
    best = {}
    for j, c in enumerate(columns):
        values = [(cells[m][j][1], m) for m in methods if cells[m][j][1] is not None]
        if len(values) > 1:
            best[c] = (min if better[c] == "lower" else max)(values)[1]
    rows = [[esc(m)] + [cells[m][j][0] for j in range(len(columns))] for m in methods]
    classes = [[""] + ["best" if best.get(c) == m else "" for c in columns] for m in methods]
    return table(header, rows, "mean ± standard error over the images; best per column "
                 "in bold", classes)


def curve_charts(data: dict) -> list[str]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for curve in data.get("curves", []):
        groups.setdefault((curve["metric"], curve["measure"]), []).append(curve)
    charts = []
    for (metric, measure), members in groups.items():
        title, ylabel = TITLES.get(metric, (metric, None))
        n = max((max(c.get("n") or [0]) for c in members), default=0)
        full = (f"{title} ({measure.replace('_', ' ')}; {members[0].get('better') or '?'} "
                f"is better, n={n})")
        curves = [Curve(c["method"], c["x"], c["mean"], c.get("sem")) for c in members]
        charts.append(line_chart(curves, full, members[0].get("xlabel", ""),
                                 ylabel or measure.replace("_", " ")))
    return charts


def sanity_table(data: dict) -> str | None:
    """Per cascade step: the layer randomised down to, and per method the mean Spearman
    correlation of |maps| with the original (the lower, the more the method depends on the
    weights)."""
    layers = data.get("sanity_layers")
    curves = [c for c in data.get("curves", []) if c["metric"] == "sanity"
              and c["measure"] == "spearman_abs"]
    if not layers or not curves:
        return None
    methods = [c["method"] for c in curves]
    rows = []
    for i, step in enumerate(curves[0]["x"]):
        name = layers.get(str(int(step)), "")
        values = []
        for c in curves:
            v = c["mean"][i] if i < len(c["mean"]) else None
            values.append("n/a" if v is None else f"{v:.3f}")
        rows.append([f"{int(step)}", esc(name)] + values)
    return table(["step", "randomised down to"] + [esc(m) for m in methods], rows,
                 "sanity cascade: Spearman of |maps| with the original map after "
                 "randomising the layers from the output down")


def cascade_pictures(data: dict, pictures: dict[str, list[str]],
                     url: Callable[[str], str]) -> str:
    """Per method, the first image's map before and after each cascade step (|map|, jet):
    a method that passes the check loses its structure as the weights are redrawn."""
    layers = data.get("sanity_layers") or {}
    steps = list(layers)
    header = ["method", "original"] + [f"{esc(step)}: {esc(layers[step])}" for step in steps]
    rows = []
    for method, keys in pictures.items():
        cells = [esc(method)]
        for i, key in enumerate(keys):
            what = ("original map" if i == 0 else
                    f"map after randomising {steps[i - 1]} layers, down to "
                    f"{layers[steps[i - 1]]}" if i - 1 < len(steps) else f"step {i}")
            cells.append(f'<img class="map" src="{url(key)}" alt="{esc(method)}: '
                         f'{esc(what)}, first image">')
        rows.append(cells)
    return (colour_legend("jet") + table(header, rows, "the first image's map, |value| "
                                         "clipped at its 99th percentile"))


def evaluate_html(data: dict, meta: dict | None = None,
                  pictures: dict[str, list[str]] | None = None,
                  url: Callable[[str], str] | None = None) -> str:
    title = (meta or {}).get("title") or "onnxpath evaluate report"
    facts = [f"{data.get('images', '?')} images", f"methods: {', '.join(data.get('methods', []))}",
             f"{data.get('seconds', 0)} s"]
    facts += [f"{k}: {v}" for k, v in (meta or {}).items() if k != "title"]
    if data.get("inputs"):
        facts.append(str(data["inputs"]))
    body = [f"<h1>{esc(title)}</h1>", f'<p class="meta">{esc(" · ".join(facts))}</p>',
            "<h2>Methods × metrics</h2>", summary_table(data)]
    charts = curve_charts(data)
    if charts:
        body.append(f"<h2>Curves ({len(charts)})</h2>")
        body.append(f'<div class="charts">{"".join(charts)}</div>')
    cascade = sanity_table(data)
    if cascade:
        body.append("<h2>Sanity cascade</h2>")
        body.append(cascade)
        if pictures and url is not None:
            body.append(cascade_pictures(data, pictures, url))
    settings = data.get("settings") or {}
    if settings:
        body.append("<h2>Settings</h2>")
        body.append(table(["setting", "value"],
                          [[esc(k), esc(v)] for k, v in sorted(settings.items())]))
    return page(title, "".join(body))
