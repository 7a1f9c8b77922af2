"""ExplainBatch (the Ray actors' callable) without Ray: the same records and files as the plain
run loop; Ray stays unimported unless --engine ray asks for it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from distributed_inputs import comparable, make_inputs, result_files
from pipeline_models import run_cli

from onnxpath.run.job import Job
from onnxpath.run.ray import ExplainBatch, parse_actors


def test_a_batch_gives_the_plain_pipelines_records_and_files(capsys, tmp_path, model):
    inputs = make_inputs(tmp_path / "in", 5)
    code, plain, _ = run_cli(capsys, model, *inputs, "-o", tmp_path / "plain", "-m",
                             "gradient,integrated-gradients", "--steps", "4")
    job = Job(methods=["gradient", "integrated-gradients"], options={"absolute": False,
                                                                       "steps": 4},
              out=tmp_path / "batch")
    from onnxpath.intake.model import load_model
    from onnxpath.io.preprocess import resolve_preprocess
    job.prep = resolve_preprocess((None, 3, 16, 16), load_model(model), None, None)
    worker = ExplainBatch(str(model), job, cache=False)
    # Two calls, positions out of order, stems fixed by the caller: files for the worker to
    # read, as the driver sends image inputs.
    answers = [worker({"position": np.array(rows), "kind": np.array(["image"] * len(rows)),
                       "name": np.array([str(inputs[k]) for k in rows]),
                       "path": np.array([str(inputs[k]) for k in rows]),
                       "stem": np.array([inputs[k].stem for k in rows]),
                       "example": np.array([b""] * len(rows), dtype=object)})
               for rows in ([3, 4], [0, 1, 2])]
    records = {}
    for answer in answers:
        for position, text in zip(answer["position"], answer["records"], strict=True):
            records[int(position)] = json.loads(text)
    batch = [r for k in range(5) for r in records[k]]
    assert code == 0 and len(batch) == len(plain) == 10
    assert comparable(batch, tmp_path / "batch") == comparable(plain, tmp_path / "plain")
    assert result_files(tmp_path / "batch") == result_files(tmp_path / "plain")
    assert not (tmp_path / "batch" / ".onnxpath").exists()  # markers are the driver's


def test_actors_option():
    assert parse_actors("3") == 3 and parse_actors("2-8") == (2, 8)
    for bad in ("0", "4-2", "x", "1-2-3"):
        try:
            parse_actors(bad)
        except Exception as err:
            assert "--actors" in str(err)
        else:
            raise AssertionError(bad)


def test_ray_is_never_imported_without_engine_ray(tmp_path, model):
    inputs = make_inputs(tmp_path / "in", 1)
    script = ("import sys; from onnxpath.cli import main; import onnxpath.run.ray; "
              f"code = main(['attribute', {str(model)!r}, {str(inputs[0])!r}, '-o', "
              f"{str(tmp_path / 'out')!r}, '-q']); "
              "print(code, 'ray' in sys.modules, file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.stderr.strip().splitlines()[-1] == "0 False"


def test_missing_ray_exits_2_in_one_line(capsys, tmp_path, model, monkeypatch):
    inputs = make_inputs(tmp_path / "in", 2)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    code, lines, err = run_cli(capsys, model, *inputs, "--engine", "ray")
    assert code == 2 and lines == []
    assert err.strip().splitlines() == [
        "onnxpath: error: --engine ray needs Ray: pip install 'onnxpath[ray]'"]
