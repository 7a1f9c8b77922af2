"""Tables: a `.csv` with a header (one example per row, the header names the features), or
`.npy` rows named by `--features names.txt`. Rendering: the `features` field of the JSON line,
[{"name", "value", "score"}], and a CSV of scores."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from onnxpath.errors import InputError, UsageError
from onnxpath.explanation import at_layer, units_field
from onnxpath.io import Adapter, Example


def read_names(path: Path) -> list[str]:
    """Feature names, one per line (blank lines skipped)."""
    try:
        names = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except OSError as err:
        raise UsageError(f"cannot read --features {path}: {err.strerror}") from err
    if not names:
        raise UsageError(f"--features {path} holds no names")
    return names


def read_csv(path: Path) -> tuple[list[str], np.ndarray]:
    """(header, rows as float32): every cell must be a number."""
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise InputError(f"{path} is not a text CSV file") from err
    rows = [r for r in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in r)]
    if len(rows) < 2:
        raise InputError(f"{path}: a CSV needs a header line and at least one data row")
    header = [h.strip() for h in rows[0]]
    data = []
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise InputError(f"{path}:{number}: {len(row)} cells, the header has "
                             f"{len(header)}")
        try:
            data.append([float(cell) for cell in row])
        except ValueError as err:
            raise InputError(f"{path}:{number}: not a number ({err})") from err
    return header, np.asarray(data, dtype=np.float32)


def read(path: Path, features: int, names: list[str] | None = None,
         stem: str | None = None) -> list[Example]:
    """Examples from a CSV (one per row) or an .npy (one row, or a 2-D array of rows), their
    output names from `stem` (default: the file's): `stem`, or `stem.rowK` for several rows."""
    if path.suffix.lower() == ".csv":
        header, rows = read_csv(path)
        names = header
    else:
        try:
            rows = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise InputError(f"cannot read {path} as .npy: {err}") from err
        rows = np.atleast_2d(rows)  # float64 stays (a float64 model runs in float64)
        rows = rows if rows.dtype == np.float64 else rows.astype(np.float32)
        names = names or [f"x{i}" for i in range(rows.shape[-1])]
    if rows.shape[-1] != features:
        raise InputError(f"{path}: {rows.shape[-1]} columns; the model takes {features} "
                         "features")
    if len(names) != features:
        raise UsageError(f"{len(names)} feature names for {features} features")
    many, stem = len(rows) > 1, stem or path.stem
    return [Example(f"{path}:{i + 2}" if path.suffix.lower() == ".csv" and many else str(path),
                    f"{stem}.row{i}" if many else stem, row, "table",
                    feature_names=list(names), values=row) for i, row in enumerate(rows)]


def features_field(names: list[str], values: np.ndarray, scores: np.ndarray) -> list[dict]:
    return [{"name": n, "value": float(v), "score": float(s)}
            for n, v, s in zip(names, values, scores, strict=True)]


def scores_csv(names: list[str], values: np.ndarray, scores: np.ndarray) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["feature", "value", "score"])
    for n, v, s in zip(names, values, scores, strict=True):
        writer.writerow([n, repr(float(v)), repr(float(s))])
    return out.getvalue().encode()


def bars(names: list[str], scores: np.ndarray, width: int = 640, row: int = 22):
    """A horizontal bar chart of signed scores (red > 0, blue < 0), one row per feature."""
    from PIL import Image, ImageDraw
    scores = np.asarray(scores, dtype=np.float64)
    image = Image.new("RGB", (width, row * len(names) + 12), "white")
    draw = ImageDraw.Draw(image)
    label_width = min(width // 3, 8 + 7 * max((len(n) for n in names), default=1))
    centre = label_width + (width - label_width) // 2
    half = (width - label_width) // 2 - 8
    scale = float(np.abs(scores).max()) or 1.0
    draw.line([(centre, 4), (centre, image.height - 4)], fill=(120, 120, 120))
    for k, (name, score) in enumerate(zip(names, scores, strict=True)):
        top = 6 + k * row
        draw.text((4, top + 4), name[:40], fill=(0, 0, 0))
        end = centre + int(half * score / scale)
        colour = (214, 39, 40) if score >= 0 else (31, 119, 180)
        draw.rectangle([min(centre, end), top + 3, max(centre, end), top + row - 4],
                       fill=colour)
    return image


class TableAdapter(Adapter):
    """Rows of a CSV (or an .npy of rows), an example each: the `features` field, a CSV of
    scores and a bar chart."""

    kind = "table"
    splits = True

    def read(self, path: Path, stem: str) -> list[Example]:
        return read(path, self.explainer.input_shape[1], self.job.feature_names, stem)

    def write(self, example: Example, raw: np.ndarray, base: str, title: str, record: dict,
              files) -> None:
        if at_layer(record) or np.shape(raw) != np.shape(example.values):  # a layer's units
            record["units"] = units_field(raw)
            if files.out is not None:
                record["outputs"]["png"] = files.png(base, bars(
                    [f"unit {i}" for i in range(np.size(raw))], np.ravel(raw)))
            return
        record["features"] = features_field(example.feature_names, example.values, raw)
        if files.out is not None:
            record["outputs"]["csv"] = files.data(
                f"{base}.csv", scores_csv(example.feature_names, example.values, raw))
            record["outputs"]["png"] = files.png(base, bars(example.feature_names, raw))
