"""Resumable runs: markers under OUT/.onnxpath, the manifest of output names, Ctrl-C + rerun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from pipeline_models import default_sigint, read_rest, run_cli, save_png

from onnxpath import Explainer
from onnxpath.run.resume import STATE


def without_time(lines: list[dict]) -> list[dict]:
    return [{k: v for k, v in line.items() if k != "time_ms"} for line in lines]


def result_files(out) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("[!.]*"))}


def counting(monkeypatch) -> list[int]:
    """How many examples each Explainer.attribute call computed."""
    calls: list[int] = []
    original = Explainer.attribute

    def counted(self, x, *args, **kwargs):
        calls.append(len(x))
        return original(self, x, *args, **kwargs)

    monkeypatch.setattr(Explainer, "attribute", counted)
    return calls


def test_a_rerun_skips_finished_inputs_and_re_emits_their_lines(capsys, tmp_path, model,
                                                               images, monkeypatch):
    out = tmp_path / "out"
    code, first, _ = run_cli(capsys, model, *images, "-o", out)
    files = result_files(out)
    assert code == 0 and len(first) == 3
    assert sorted(p.name for p in (out / STATE / "done").iterdir()) == [
        "img0.json", "img1.json", "img2.json"]
    calls = counting(monkeypatch)
    code, again, _ = run_cli(capsys, model, *images, "-o", out)
    assert code == 0 and calls == [] and again == first  # time_ms too: the same lines
    assert result_files(out) == files


def test_deleted_markers_redo_exactly_those_inputs(capsys, tmp_path, model, monkeypatch):
    inputs = [save_png(tmp_path / "in" / f"p{i}.png", seed=i) for i in range(8)]
    out = tmp_path / "out"
    _, first, _ = run_cli(capsys, model, *inputs, "-o", out)
    inodes = {p.name: p.stat().st_ino for p in out.glob("*.npy")}
    for stem in ("p1", "p4", "p6"):
        (out / STATE / "done" / f"{stem}.json").unlink()
    calls = counting(monkeypatch)
    code, again, _ = run_cli(capsys, model, *inputs, "-o", out)
    assert code == 0 and sum(calls) == 3
    assert without_time(again) == without_time(first)  # in input order, all eight
    redone = {name for name, ino in inodes.items() if (out / name).stat().st_ino != ino}
    assert redone == {"p1.gradient.npy", "p4.gradient.npy", "p6.gradient.npy"}


def test_no_resume_redoes_everything(capsys, tmp_path, model, images, monkeypatch):
    out = tmp_path / "out"
    run_cli(capsys, model, *images, "-o", out)
    calls = counting(monkeypatch)
    code, lines, _ = run_cli(capsys, model, *images, "-o", out, "--no-resume")
    assert code == 0 and sum(calls) == 3 and len(lines) == 3


@pytest.mark.parametrize("change", [["-m", "smoothgrad"], ["--target", "1"],
                                    ["--colormap", "magma"], ["--mean", "0.4,0.4,0.4"]])
def test_another_job_into_the_same_folder_is_not_skipped(capsys, tmp_path, model, images,
                                                         monkeypatch, change):
    out = tmp_path / "out"
    run_cli(capsys, model, *images, "-o", out)
    calls = counting(monkeypatch)
    code, lines, _ = run_cli(capsys, model, *images, "-o", out, *change)
    assert code == 0 and sum(calls) == 3 and len(lines) == 3


def test_missing_result_files_and_failed_inputs_are_redone(capsys, tmp_path, model, images,
                                                           monkeypatch):
    out = tmp_path / "out"
    broken = tmp_path / "in" / "broken.png"
    broken.write_bytes(b"not a png")
    code, _, _ = run_cli(capsys, model, *images, broken, "-o", out)
    assert code == 1 and not (out / STATE / "done" / "broken.json").exists()
    (out / "img1.gradient.png").unlink()
    save_png(broken, seed=7)  # fixed since
    calls = counting(monkeypatch)
    code, lines, _ = run_cli(capsys, model, *images, broken, "-o", out)
    assert code == 0 and sum(calls) == 2 and all(line["error"] is None for line in lines)
    assert (out / "img1.gradient.png").exists() and (out / "broken.gradient.png").exists()


def test_adding_inputs_never_renames_earlier_outputs(capsys, tmp_path, model):
    first = save_png(tmp_path / "a" / "cat.png", seed=1)
    second = save_png(tmp_path / "b" / "cat.png", seed=2)
    out = tmp_path / "out"
    _, lines, _ = run_cli(capsys, model, first, "-o", out)
    assert lines[0]["outputs"]["npy"] == str(out / "cat.gradient.npy")
    _, lines, _ = run_cli(capsys, model, first, second, "-o", out)
    names = [os.path.basename(line["outputs"]["npy"]) for line in lines]
    # Without the manifest both would now be a_cat and b_cat (output_stems over the list).
    assert names == ["cat.gradient.npy", "b_cat.gradient.npy"]
    _, lines, _ = run_cli(capsys, model, second, first, "-o", out)  # any order, same names
    assert [os.path.basename(line["outputs"]["npy"]) for line in lines] == names[::-1]
    manifest = json.loads((out / STATE / "manifest.json").read_text())
    assert [stem for _, stem in manifest["inputs"]] == ["cat", "b_cat"]


def test_resumed_npz_holds_every_map(capsys, tmp_path, model, images):
    out, npz = tmp_path / "out", tmp_path / "maps.npz"
    _, first, _ = run_cli(capsys, model, *images[:2], "-o", out, "--npz", npz)
    _, lines, _ = run_cli(capsys, model, *images, "-o", out, "--npz", npz)
    with np.load(npz) as bundle:
        assert sorted(bundle) == ["img0.gradient", "img1.gradient", "img2.gradient"]
        for line in lines:
            assert np.array_equal(bundle[line["outputs"]["npz_key"]],
                                  np.load(line["outputs"]["npy"]))
    assert without_time(lines[:2]) == without_time(first)


def test_result_files_honour_the_umask(capsys, tmp_path, model, images):
    out = tmp_path / "out"
    old = os.umask(0o022)
    try:
        from onnxpath.io.outputs import current_umask
        current_umask.cache_clear()
        run_cli(capsys, model, images[0], "-o", out, "--npz", tmp_path / "m.npz")
    finally:
        os.umask(old)
        current_umask.cache_clear()
    for path in [*out.glob("[!.]*"), tmp_path / "m.npz", *(out / STATE).rglob("*.json")]:
        assert path.stat().st_mode & 0o777 == 0o644, path


def test_the_umask_is_read_not_guessed(tmp_path):
    script = ("import os; os.umask(0o027); from pathlib import Path; "
              "from onnxpath.io.outputs import write_atomic; "
              f"print(oct(write_atomic(Path({str(tmp_path / 'f.bin')!r}), b'x')"
              ".stat().st_mode & 0o777))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "0o640"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_then_resume_equals_one_uninterrupted_run(tmp_path, model):
    inputs = []
    for i in range(40):
        inputs.append(tmp_path / "in" / f"x{i:02d}.npy")
        inputs[-1].parent.mkdir(exist_ok=True)
        np.save(inputs[-1], np.random.default_rng(i).random((3, 16, 16), np.float32))
    args = [sys.executable, "-m", "onnxpath", "attribute", str(model), *map(str, inputs),
            "-m", "occlusion", "--window", "2", "--stride", "1", "-q"]
    whole = subprocess.run([*args, "-o", str(tmp_path / "whole")], capture_output=True,
                           text=True, check=True)
    out = tmp_path / "out"
    process = subprocess.Popen([*args, "-o", str(out)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    first = [process.stdout.readline() for _ in range(3)]
    process.send_signal(signal.SIGINT)
    rest, _ = read_rest(process, timeout=120)
    assert process.returncode == 130
    interrupted = [json.loads(line) for line in (*first, *rest.splitlines()) if line.strip()]
    assert 3 <= len(interrupted) < 40
    resumed = subprocess.run([*args, "-o", str(out), "--resume"], capture_output=True,
                             text=True, check=True)
    lines = [json.loads(line) for line in resumed.stdout.splitlines()]
    expected = [json.loads(line) for line in whole.stdout.splitlines()]
    for line in expected:
        line["outputs"] = {k: v.replace(str(tmp_path / "whole"), str(out))
                           for k, v in line["outputs"].items()}
    assert without_time(lines) == without_time(expected)
    assert result_files(out) == result_files(tmp_path / "whole")
    assert not list(out.rglob("*.part"))
