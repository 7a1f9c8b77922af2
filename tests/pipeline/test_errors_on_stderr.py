"""Errors on stderr as well as in the records, whatever stdout goes to: one line per failed
record, and one summary line at the end of a run with failures, also after a progress bar."""

from __future__ import annotations

import json
import subprocess
import sys

from pipeline_models import run_cli

from onnxpath import Explainer
from onnxpath.run.job import Job
from onnxpath.run.loop import RunLoop


def test_stdout_to_a_file_still_shows_each_error_and_the_count(tmp_path, model, images):
    broken = tmp_path / "in" / "broken.png"
    broken.write_bytes(b"not a png")
    missing = tmp_path / "in" / "missing.png"
    with open(tmp_path / "out.jsonl", "w") as stdout:
        result = subprocess.run(
            [sys.executable, "-m", "onnxpath", "attribute", str(model), str(images[0]),
             str(broken), str(missing), "-m", "gradient,occlusion", "-q"],
            stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=120)
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert result.returncode == 1 and len(lines) == 6
    errors = [line for line in lines if line["error"] is not None]
    expected = [f"onnxpath: error: {line['input']} [{line['method']}]: {line['error']}"
                for line in errors]
    assert len(errors) == 4
    assert result.stderr.splitlines() == [*expected, "onnxpath: 2 of 3 inputs failed"]


def test_a_run_without_failures_says_nothing(capsys, tmp_path, model, images):
    code, lines, err = run_cli(capsys, model, *images, "-o", tmp_path / "out")
    assert code == 0 and len(lines) == 3 and err == ""


def test_the_count_outlives_the_progress_bar(capsys, tmp_path, model, images):
    broken = tmp_path / "in" / "broken.png"
    broken.write_bytes(b"not a png")
    records = []
    loop = RunLoop(Explainer(model), Job(), records.append, progress=True)
    assert loop.run([images[0], broken, images[1]]) == 1
    err = capsys.readouterr().err
    assert "\r" in err  # the bar was drawn, and cleared at the end
    last = err.split("\n")[-2]  # the last line, after the last newline's predecessor
    assert last.endswith("onnxpath: 1 of 3 inputs failed")
    assert f"onnxpath: error: {broken} [gradient]: " in err
