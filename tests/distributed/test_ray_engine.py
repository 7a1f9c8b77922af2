"""`--engine ray` on a local 2-CPU Ray: the plain CLI's lines and files, faults, resume.

Worker deaths are injected with the test-only $ONNXPATH_TEST_KILL_WORKER hook (see
onnxpath/distributed/batch.py): the worker `os._exit`s right after writing the files of a
matching input, before returning any record, as a crash or the OOM killer would.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from distributed_inputs import comparable, make_inputs, result_files
from pipeline_models import run_cli

from onnxpath.run.resume import STATE

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def cluster():
    """One local Ray for the module: the CLI joins it instead of starting its own (~10 s)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    yield
    ray.shutdown()


RAY = ("--engine", "ray", "--actors", "2", "-q")


def test_200_inputs_equal_the_plain_cli_and_deleted_markers_redo_exactly_those(
        capsys, tmp_path, model):
    inputs = make_inputs(tmp_path / "in", 200)
    code, plain, _ = run_cli(capsys, model, *inputs, "-o", tmp_path / "plain", "-q")
    out = tmp_path / "ray"
    code_ray, lines, _ = run_cli(capsys, model, *inputs, "-o", out, *RAY)
    assert code == code_ray == 0 and len(lines) == 200
    assert comparable(lines, out) == comparable(plain, tmp_path / "plain")
    assert result_files(out) == result_files(tmp_path / "plain")  # 400 files, byte for byte
    assert len(list((out / STATE / "done").iterdir())) == 200

    inodes = {p.name: p.stat().st_ino for p in out.glob("*.npy")}
    for stem in ("img007", "img100", "img199"):
        (out / STATE / "done" / f"{stem}.json").unlink()
    code, again, _ = run_cli(capsys, model, *inputs, "-o", out, *RAY)
    assert code == 0 and comparable(again, out) == comparable(lines, out)
    redone = {name for name, ino in inodes.items() if (out / name).stat().st_ino != ino}
    assert redone == {"img007.gradient.npy", "img100.gradient.npy", "img199.gradient.npy"}
    assert [line for k, line in enumerate(again) if k not in (7, 100, 199)] == \
        [line for k, line in enumerate(lines) if k not in (7, 100, 199)]  # re-emitted as is


def test_a_worker_killed_mid_run_loses_nothing_and_duplicates_nothing(capsys, tmp_path,
                                                                      model, monkeypatch):
    inputs = make_inputs(tmp_path / "in", 16)
    _, plain, _ = run_cli(capsys, model, *inputs, "-o", tmp_path / "plain", "-q")
    monkeypatch.setenv("ONNXPATH_TEST_KILL_WORKER", "img009")
    monkeypatch.setenv("ONNXPATH_TEST_KILL_WORKER_ONCE", str(tmp_path / "killed"))
    out = tmp_path / "ray"
    code, lines, _ = run_cli(capsys, model, *inputs, "-o", out, *RAY)
    assert (tmp_path / "killed").exists()  # a worker did die
    assert code == 0
    assert [line["input"] for line in lines] == [str(p) for p in inputs]  # each once, in order
    assert comparable(lines, out) == comparable(plain, tmp_path / "plain")
    assert result_files(out) == result_files(tmp_path / "plain")
    assert not list(out.rglob("*.part"))


def test_an_input_that_always_kills_its_worker_is_one_error_line(capsys, tmp_path, model,
                                                                 monkeypatch):
    inputs = make_inputs(tmp_path / "in", 10)
    inputs.insert(5, make_inputs(tmp_path / "in", 1, prefix="poison")[0])
    monkeypatch.setenv("ONNXPATH_TEST_KILL_WORKER", "poison")
    out = tmp_path / "ray"
    code, lines, err = run_cli(capsys, model, *inputs, "-o", out, *RAY)
    assert code == 1
    assert [line["input"] for line in lines] == [str(p) for p in inputs]
    failed = [line for line in lines if line["error"] is not None]
    assert len(failed) == 1 and failed[0]["input"] == str(inputs[5])
    assert "worker died" in failed[0]["error"] and failed[0]["outputs"] == {}
    done = sorted(p.stem for p in (out / STATE / "done").iterdir())
    assert done == [p.stem for p in inputs if "poison" not in p.stem]
    assert "one at a time" in err


def test_an_unreachable_cluster_exits_2_in_one_line(tmp_path, model):
    inputs = make_inputs(tmp_path / "in", 1)
    result = subprocess.run(
        [sys.executable, "-m", "onnxpath", "attribute", str(model), str(inputs[0]),
         "--engine", "ray", "--address", "127.0.0.1:1"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "onnxpath: error: cannot reach the Ray cluster at 127.0.0.1:1: Connection refused"]


def test_output_and_target_index_reach_the_workers(capsys, tmp_path, model):
    """The driver's intake choices travel to every actor: the lines equal the plain CLI's."""
    inputs = make_inputs(tmp_path / "in", 6)
    choice = ("--target-index", "2", "-m", "gradient,integrated-gradients")
    code, plain, _ = run_cli(capsys, model, *inputs, *choice, "-o", tmp_path / "plain", "-q")
    out = tmp_path / "ray"
    code_ray, lines, _ = run_cli(capsys, model, *inputs, *choice, "-o", out, *RAY)
    assert code == code_ray == 0 and len(lines) == 12
    assert {line["target"] for line in lines} == {2}
    assert comparable(lines, out) == comparable(plain, tmp_path / "plain")
    assert result_files(out) == result_files(tmp_path / "plain")
