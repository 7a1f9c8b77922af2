"""`file://` URLs (issue "Trust ..."): for --out, --report and inputs they are the local path
they name; one naming another host is refused in one line. Before, `-o file:///…` went to
fsspec's local filesystem, which creates no parent folders, and failed as an unexpected error."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest

from onnxpath.errors import UsageError
from onnxpath.io.storage import RemotePath, local_name, location
from tests.io.io_helpers import run_cli

ROOT = Path(__file__).resolve().parents[2]
CHURN = ROOT / "models" / "examples" / "churn.onnx"
ROWS = ROOT / "models" / "examples" / "customers.csv"


@pytest.mark.parametrize("url, path", [
    ("file:///tmp/run", "/tmp/run"), ("file://localhost/tmp/run", "/tmp/run"),
    ("FILE:///tmp/a%20b/", "/tmp/a b/"), ("s3://bucket/run", "s3://bucket/run"),
    ("out/run", "out/run")])
def test_a_file_url_names_its_local_path(url, path):
    assert local_name(url) == path
    assert location(url) == (RemotePath(path) if path.startswith("s3:") else Path(path))


@pytest.mark.parametrize("url", ["file://server/share/run", "file://"])
def test_a_file_url_of_another_host_is_refused(url):
    with pytest.raises(UsageError, match="file:///path/to/folder"):
        local_name(url)


def test_out_report_and_inputs_as_file_urls(capsys, tmp_path):
    rows = tmp_path / "in" / "rows.csv"
    rows.parent.mkdir()
    shutil.copy(ROWS, rows)
    code, plain, err = run_cli(capsys, CHURN, rows, "-o", tmp_path / "plain")
    assert code == 0, err
    out, report = tmp_path / "deep" / "er" / "out", tmp_path / "r.html"
    code, lines, err = run_cli(capsys, CHURN, rows.as_uri(), "-o", out.as_uri(),
                               "--report", report.as_uri())
    assert code == 0 and err == "", err
    assert [line["input"] for line in lines] == [line["input"] for line in plain]
    for here, there in zip(plain, lines, strict=True):
        assert Path(there["outputs"]["npy"]).parent == out
        assert np.array_equal(np.load(there["outputs"]["npy"]), np.load(here["outputs"]["npy"]))
    assert report.read_text().count('<section class="row"') == len(lines)
    # on stdin too
    capsys.readouterr()
    import sys
    stdin, sys.stdin = sys.stdin, io.StringIO(rows.as_uri() + "\n")
    try:
        code, again, err = run_cli(capsys, CHURN, "-", "-o", (tmp_path / "again").as_uri())
    finally:
        sys.stdin = stdin
    assert code == 0, err
    assert [line["input"] for line in again] == [line["input"] for line in plain]


def test_out_as_a_file_url_of_another_host_is_one_line(capsys, tmp_path):
    code, lines, err = run_cli(capsys, CHURN, ROWS, "-o", "file://server/share/out")
    assert code == 2 and lines == []
    assert err.strip().splitlines() == [
        "onnxpath: error: file://server/share/out: a file:// URL must name a local absolute "
        "path (file:///path/to/folder); give the path itself"]
