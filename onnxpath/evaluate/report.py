"""Evaluation results and their three written forms: a text table, CSV and JSON.

A `Score` is one number per image for one method and one table column; a `Series` is one
curve per image (fractions, steps, n, randomisation steps) behind a metric. The table shows
each score's mean ± standard error over the images; CSV and JSON also carry every curve.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Score:
    column: str  # the table column, e.g. "lerf", "road-morf", "sanity-last"
    method: str
    values: np.ndarray  # (N,) one per image; NaN where undefined
    better: str  # "lower" or "higher"
    meaning: str = ""


@dataclass
class Series:
    metric: str  # e.g. "lerf", "road-morf", "sanity"
    measure: str  # e.g. "abs_frac_change", "prob", "spearman_abs"
    method: str
    x: list[float]
    xlabel: str
    values: np.ndarray  # (N, len(x))
    better: str = ""


def mean_sem(values: np.ndarray) -> tuple[float, float, int]:
    """Mean, standard error of the mean, and count, over the finite values (over axis 0)."""
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    n = finite.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, np.where(finite, v, 0).sum(0) / np.maximum(n, 1), np.nan)
        dev = np.where(finite, v - mean, 0.0)
        sd = np.sqrt((dev ** 2).sum(0) / np.maximum(n - 1, 1))
        sem = np.where(n > 1, sd / np.sqrt(np.maximum(n, 1)), np.nan)
    return mean, sem, n


@dataclass
class Report:
    methods: list[str]
    scores: list[Score] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    images: int = 0
    seconds: float = 0.0
    notes: dict = field(default_factory=dict)
    # The sanity cascade of the first image, for pictures (not in CSV/JSON): per method, the
    # original H×W map and the map after each evaluated step, in step order.
    cascade: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def columns(self) -> list[str]:
        seen: list[str] = []
        for s in self.scores:
            if s.column not in seen:
                seen.append(s.column)
        return seen

    def score(self, method: str, column: str) -> Score | None:
        return next((s for s in self.scores if s.method == method and s.column == column), None)

    def table(self) -> str:
        """Methods × metrics, mean ± standard error; arrows say which way is better."""
        columns = self.columns()
        header = ["method"] + [f"{c} {'↓' if self._better(c) == 'lower' else '↑'}"
                               for c in columns]
        rows = [header]
        for method in self.methods:
            row = [method]
            for column in columns:
                s = self.score(method, column)
                if s is None:
                    row.append("-")
                    continue
                mean, sem, n = mean_sem(s.values)
                row.append("n/a" if n == 0 else f"{figure(mean)} ± {figure(sem)}" if n > 1
                           else figure(mean))
            rows.append(row)
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
                 for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def _better(self, column: str) -> str:
        return next(s.better for s in self.scores if s.column == column)

    def csv(self) -> str:
        """Long format: one row per method, metric, measure and x (x empty for table
        scores)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["method", "metric", "measure", "x", "mean", "sem", "n", "better"])
        for s in self.scores:
            mean, sem, n = mean_sem(s.values)
            writer.writerow([s.method, s.column, "score", "", _num(mean), _num(sem), int(n),
                             s.better])
        for c in self.series:
            mean, sem, n = mean_sem(c.values)
            for i, x in enumerate(c.x):
                writer.writerow([c.method, c.metric, c.measure, _num(x), _num(mean[i]),
                                 _num(sem[i]), int(n[i]), c.better])
        return buffer.getvalue()

    def as_json(self) -> dict:
        summary: dict = {}
        for s in self.scores:
            mean, sem, n = mean_sem(s.values)
            summary.setdefault(s.method, {})[s.column] = {
                "mean": _json_num(mean), "sem": _json_num(sem), "n": int(n), "better": s.better,
                "meaning": s.meaning}
        curves = []
        for c in self.series:
            mean, sem, n = mean_sem(c.values)
            curves.append({"metric": c.metric, "measure": c.measure, "method": c.method,
                           "xlabel": c.xlabel, "x": [float(v) for v in c.x],
                           "mean": [_json_num(v) for v in mean],
                           "sem": [_json_num(v) for v in sem], "n": [int(v) for v in n],
                           "better": c.better})
        return {"images": self.images, "methods": self.methods, "seconds": round(self.seconds, 2),
                "settings": self.settings, "summary": summary, "curves": curves,
                **self.notes}


def figure(value: float) -> str:
    """Three decimals, or three significant digits for values below 0.01 (infidelity is
    often 1e-5): a table of 0.000s says nothing."""
    value = float(value)
    return f"{value:.3f}" if value == 0 or not 0 < abs(value) < 0.01 else f"{value:.2e}"


def _num(value) -> str:
    value = float(value)
    return "" if not np.isfinite(value) else f"{value:.6g}"


def _json_num(value) -> float | None:
    value = float(value)
    if not np.isfinite(value):
        return None
    return round(value, 6) if abs(value) >= 1e-3 else float(f"{value:.6g}")
