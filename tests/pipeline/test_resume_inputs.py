"""Resume and the inputs' content: a marker vouches for the content it was made from. An input
overwritten since is redone, alone; `touch` alone redoes nothing; a file of many examples (a
CSV) is compared whole. And two runs adding inputs to one --out at once both keep theirs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from pipeline_models import run_cli, save_png

from onnxpath import Explainer
from onnxpath.run import resume
from onnxpath.run.resume import STATE

TABLE = Path(__file__).parent.parent / "io" / "data"


def counting(monkeypatch, owner, name: str) -> list:
    """The calls of owner.name, counted (Explainer.attribute: the examples computed)."""
    calls: list = []
    original = getattr(owner, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def computed(calls) -> int:
    return sum(len(args[1]) for args in calls)


def an_hour_ago(*paths: Path) -> None:
    for path in paths:
        then = time.time_ns() - 3600 * 10**9
        os.utime(path, ns=(then, then))


def test_an_overwritten_input_is_redone_alone(capsys, tmp_path, model, images, monkeypatch):
    out = tmp_path / "out"
    _, first, _ = run_cli(capsys, model, *images, "-o", out)
    save_png(images[1], seed=9)  # other content, same name
    calls = counting(monkeypatch, Explainer, "attribute")
    code, again, _ = run_cli(capsys, model, *images, "-o", out)
    assert code == 0 and computed(calls) == 1
    assert again[0] == first[0] and again[2] == first[2]  # re-emitted as they were
    assert again[1]["logit"] != first[1]["logit"]
    marker = json.loads((out / STATE / "done" / "img1.json").read_text())
    assert marker["source"]["sha256"] == resume.file_digest(images[1])


def test_touch_alone_redoes_nothing_and_an_unchanged_identity_is_not_hashed(
        capsys, tmp_path, model, images, monkeypatch):
    out = tmp_path / "out"
    an_hour_ago(*images)  # old files: their identity (size, mtime, inode) can be trusted
    run_cli(capsys, model, *images, "-o", out)
    calls = counting(monkeypatch, Explainer, "attribute")
    hashed = counting(monkeypatch, resume, "file_digest")
    code, _, _ = run_cli(capsys, model, *images, "-o", out)
    assert code == 0 and calls == [] and hashed == []
    os.utime(images[2])  # touch: a new mtime, the same content
    code, _, _ = run_cli(capsys, model, *images, "-o", out)
    assert code == 0 and calls == [] and [args[0] for args in hashed] == [images[2]]


def test_a_rewrite_keeping_size_mtime_and_inode_is_caught_when_the_mtime_was_recent(
        capsys, tmp_path, model, monkeypatch):
    """A file written just before the run (a coarse mtime could repeat) is compared by
    content on the next run, even when its size, mtime and inode are the same."""
    x = tmp_path / "in" / "x.npy"
    x.parent.mkdir()
    np.save(x, np.zeros((3, 16, 16), np.float32))
    out = tmp_path / "out"
    run_cli(capsys, model, x, "-o", out)
    stat = x.stat()
    with open(x, "r+b") as f:  # in place: the same inode and size
        f.seek(-4, os.SEEK_END)
        f.write(np.float32(5.0).tobytes())
    os.utime(x, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (x.stat().st_ino, x.stat().st_size, x.stat().st_mtime_ns) == \
        (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    calls = counting(monkeypatch, Explainer, "attribute")
    code, _, _ = run_cli(capsys, model, x, "-o", out)
    assert code == 0 and computed(calls) == 1


def test_a_changed_csv_redoes_its_rows_and_no_other_file_s(capsys, tmp_path, monkeypatch):
    model = TABLE / "mlp_classifier.onnx"
    rows = (TABLE / "customers.csv").read_text().splitlines()
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    first.write_text("\n".join(rows[:3]) + "\n")  # the header and two rows
    second.write_text("\n".join([rows[0], *rows[3:5]]) + "\n")  # the header and two more
    out = tmp_path / "out"
    code, lines, _ = run_cli(capsys, model, first, second, "-o", out)
    assert code == 0 and len(lines) == 4
    calls = counting(monkeypatch, Explainer, "attribute")
    os.utime(first)  # touched only
    code, again, _ = run_cli(capsys, model, first, second, "-o", out)
    assert code == 0 and calls == [] and again == lines
    first.write_text("\n".join([*rows[:2], rows[2].replace("0", "1")]) + "\n")  # a row edited
    code, again, _ = run_cli(capsys, model, first, second, "-o", out)
    assert code == 0 and len(calls) == 2  # first.csv's two rows, one call each
    assert again[2:] == lines[2:] and again[1] != lines[1]


@pytest.mark.skipif(sys.platform == "win32", reason="flock")
def test_two_runs_adding_inputs_to_one_out_at_once_keep_both(tmp_path, model):
    """Each run holds the manifest between reading and writing it (made slow here, so that
    without the lock the second run's write would drop the first run's entries)."""
    out = tmp_path / "out"
    groups = [[save_png(tmp_path / side / f"img{i}.png", seed=10 * k + i) for i in range(3)]
              for k, side in enumerate(("a", "b"))]  # the same names: the same fresh stems
    slow = ("import sys, time\n"
            "from onnxpath.run import resume\n"
            "read = resume.RunState.read_manifest\n"
            "def slowly(self):\n"
            "    known = read(self)\n"
            "    time.sleep(1.5)\n"
            "    return known\n"
            "resume.RunState.read_manifest = slowly\n"
            "from onnxpath.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    runs = [subprocess.Popen([sys.executable, "-c", slow, "attribute", str(model),
                              *map(str, group), "-o", str(out), "-q"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for group in groups]
    results = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], results
    manifest = json.loads((out / STATE / "manifest.json").read_text())["inputs"]
    assert sorted(key for key, _ in manifest) == sorted(str(p) for g in groups for p in g)
    stems = [stem for _, stem in manifest]
    assert len(set(stems)) == 6
    for (stdout, _), group in zip(results, groups, strict=True):
        lines = [json.loads(line) for line in stdout.splitlines()]
        assert [line["input"] for line in lines] == [str(p) for p in group]
        for line, path in zip(lines, group, strict=True):
            stem = dict(manifest)[str(path)]
            assert line["outputs"]["npy"] == str(out / f"{stem}.gradient.npy")
            marker = json.loads((out / STATE / "done" / f"{stem}.json").read_text())
            assert marker["input"] == str(path)
    assert len(list((out / STATE / "done").iterdir())) == 6
    shutil.rmtree(out)
