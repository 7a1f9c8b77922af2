"""SIGTERM stops any command at any stage like Ctrl-C does: cleanup runs (atomic files, the
--npz archive, the report page), one line says so, exit 143. Before, only the Ray engine
handled it; a local run died silently, mid-write."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from pipeline_models import read_rest

from onnxpath.cli import main
from onnxpath.run.resume import STATE

LINE = "onnxpath: terminated (SIGTERM); every result already reported is complete"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_mid_batch_keeps_every_finished_result(tmp_path, model):
    inputs = []
    for i in range(40):
        inputs.append(tmp_path / "in" / f"x{i:02d}.npy")
        inputs[-1].parent.mkdir(exist_ok=True)
        np.save(inputs[-1], np.random.default_rng(i).random((3, 16, 16), np.float32))
    out, npz, report = tmp_path / "out", tmp_path / "maps.npz", tmp_path / "report.html"
    process = subprocess.Popen(
        [sys.executable, "-m", "onnxpath", "attribute", str(model), *map(str, inputs), "-m",
         "occlusion", "--window", "2", "--stride", "1", "-q", "-b", "2", "-o", str(out),
         "--npz", str(npz), "--report", str(report)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = [process.stdout.readline() for _ in range(3)]
    process.send_signal(signal.SIGTERM)
    rest, err = read_rest(process, timeout=120)
    assert process.returncode == 143, err
    assert err.splitlines().count(LINE) == 1 and err.strip().splitlines()[-1] == LINE, err
    assert "Traceback" not in err
    records = [json.loads(line) for line in (*first, *rest.splitlines()) if line.strip()]
    assert 3 <= len(records) < 40 and all(r["error"] is None for r in records)
    assert not list(tmp_path.rglob("*.part"))
    stems = {os.path.basename(r["input"]).removesuffix(".npy") for r in records}
    markers = {p.stem for p in (out / STATE / "done").glob("*.json")}
    assert markers == stems
    for r in records:
        assert np.load(r["outputs"]["npy"]).shape == (3, 16, 16)
    with np.load(npz) as saved:
        assert set(saved.files) == {r["outputs"]["npz_key"] for r in records}
    assert report.exists() and report.stat().st_size > 0


def test_sigterm_while_the_model_loads(capsys, monkeypatch, model, tmp_path):
    """Before any run: the same line and status, and the previous handler back afterwards."""
    from onnxpath.cli import attribute

    load = attribute.explainer_from

    def slow_load(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return load(*args, **kwargs)

    monkeypatch.setattr(attribute, "explainer_from", slow_load)
    before = signal.getsignal(signal.SIGTERM)
    np.save(tmp_path / "x.npy", np.zeros((3, 16, 16), np.float32))
    assert main(["attribute", str(model), str(tmp_path / "x.npy"), "-q"]) == 143
    captured = capsys.readouterr()
    assert captured.err.strip() == LINE and captured.out == ""
    assert signal.getsignal(signal.SIGTERM) is before
