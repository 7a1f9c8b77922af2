"""Batches: input expansion and order, JSON lines, targets and labels, progress, Ctrl-C."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from pipeline_models import default_sigint, read_rest, run_cli, save_png

from onnxpath import Explainer
from onnxpath.io.inputs import expand_inputs, output_stems
from onnxpath.run.progress import Progress

FIELDS = {"input", "method", "target", "label", "logit", "prob", "wrt", "top", "outputs", "params",
          "time_ms", "error", "extras"}


def test_batches_give_the_same_results_in_the_same_order(capsys, tmp_path, model, images):
    more = images + [save_png(tmp_path / "in" / f"extra{i}.png", seed=9 + i) for i in range(2)]
    _, one, _ = run_cli(capsys, model, *more, "-o", tmp_path / "one")
    code, three, err = run_cli(capsys, model, *more, "-o", tmp_path / "three", "-b", "3")
    assert code == 0, err
    assert [r["input"] for r in three] == [str(p) for p in more]
    for a, b in zip(one, three, strict=True):
        assert set(b) == FIELDS and a["target"] == b["target"]
        np.testing.assert_allclose(np.load(b["outputs"]["npy"]), np.load(a["outputs"]["npy"]),
                                   rtol=1e-5, atol=1e-6)


def test_default_target_needs_no_separate_forward_pass(model, tmp_path):
    x = np.random.default_rng(0).standard_normal((3, 3, 16, 16)).astype(np.float32)
    explainer = Explainer(model)
    found = explainer.attribute(x)
    engine = explainer.engine(x.shape)
    assert engine._forward is None, "the argmax came from the gradient run itself"
    again = Explainer(model)
    given = again.attribute(x, target=found.targets)
    assert again.engine(x.shape)._forward is None, "a given target needs no forward pass"
    np.testing.assert_array_equal(found.targets, given.targets)
    np.testing.assert_allclose(found.maps, given.maps, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(found.class_logits, given.class_logits, rtol=1e-6)


def test_inputs_from_folders_globs_and_stdin(tmp_path, model):
    root = tmp_path / "photos"
    paths = [save_png(root / "b" / "x.png"), save_png(root / "a" / "x.png"),
             save_png(root / "a" / "deep" / "y.png"), save_png(root / ".hidden" / "z.png")]
    np.save(root / "t.npy", np.ones((3, 16, 16), np.float32))
    (root / "readme.txt").write_text("skipped in folders")
    save_png(root / "out" / "x.gradient.png")  # last run's overlays: not inputs
    found = expand_inputs([str(root)], exclude=[root / "out"])
    assert found == [paths[2], paths[1], paths[0], root / "t.npy"]  # sorted, recursive
    assert expand_inputs([str(root / "*" / "x.png")]) == [paths[1], paths[0]]
    nothing = str(root / "*.jpeg")
    assert expand_inputs([nothing]) == [type(root)(nothing)]  # kept: it gets an error line
    stdin = io.StringIO(f"{paths[0]}\n\n{root / 'a'}\n")
    assert expand_inputs(["-"], stdin=stdin) == [paths[0], paths[2], paths[1]]
    stems = output_stems(found)
    assert stems == ["y", "a_x", "b_x", "t"] and len(set(stems)) == len(stems)


def test_stdin_paths_through_the_cli(tmp_path, model, images):
    listing = "\n".join(map(str, reversed(images))) + "\n"
    result = subprocess.run([sys.executable, "-m", "onnxpath", "attribute", str(model), "-",
                             "-q"], input=listing, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["input"] for line in lines] == [str(p) for p in reversed(images)]
    assert result.stderr == "", "no progress bar when stderr is not a terminal"


def test_top_k_targets_with_labels(capsys, tmp_path, model, images):
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"0": ["n0", "cat"], "1": ["n1", "dog"], "2": ["n2", "fox"],
                                  "3": ["n3", "owl"]}))
    code, lines, err = run_cli(capsys, model, images[0], "--labels", labels, "--target", "top2",
                               "-o", tmp_path / "out")
    assert code == 0, err
    top = lines[0]["top"]
    assert len(top) == 4 and [t["prob"] for t in top] == sorted((t["prob"] for t in top),
                                                                reverse=True)
    assert [line["target"] for line in lines] == [top[0]["class"], top[1]["class"]]
    assert [line["label"] for line in lines] == [top[0]["label"], top[1]["label"]]
    names = {os.path.basename(line["outputs"]["npy"]) for line in lines}
    assert names == {f"img0.gradient.class{t['class']}.npy" for t in top[:2]}
    text = tmp_path / "labels.txt"
    text.write_text("cat\ndog\nfox\nowl\n")
    code, lines, _ = run_cli(capsys, model, images[0], "--labels", text, "--target", "Owl")
    assert code == 0 and lines[0]["target"] == 3 and lines[0]["label"] == "owl"


def test_bad_target_is_a_usage_error(capsys, model, images):
    code, lines, err = run_cli(capsys, model, images[0], "--target", "zebra")
    assert code == 2 and lines == [] and "--target 'zebra'" in err


def test_progress_bar_only_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    bar = Progress(3, stream=screen, interval=0)
    bar.advance(1)
    bar.note("onnxpath: note: something")
    bar.advance(2, failed=1)
    bar.clear()
    text = screen.getvalue()
    assert "1/3" in text and "3/3, 1 failed" in text and "note: something\n" in text
    assert text.endswith("\r\x1b[K"), "the bar is erased at the end"
    pipe = io.StringIO()
    Progress(3, stream=pipe).advance(3)
    assert pipe.getvalue() == ""
    assert Progress(3, stream=Terminal(), enabled=False).enabled is False  # --quiet


def test_ctrl_c_keeps_finished_results_and_leaves_no_partial_file(capsys, tmp_path, model,
                                                                   images, monkeypatch):
    calls = {"n": 0}
    original = Explainer.attribute

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Explainer, "attribute", interrupted)
    out = tmp_path / "out"
    code, lines, err = run_cli(capsys, model, *images, "-o", out, "--npz", tmp_path / "m.npz")
    assert code == 130 and err.strip().endswith("onnxpath: interrupted")
    assert [line["input"] for line in lines] == [str(p) for p in images[:2]]
    assert sorted(p.name for p in out.glob("[!.]*")) == sorted(
        f"img{i}.gradient.{ext}" for i in range(2) for ext in ("npy", "png"))
    assert sorted(np.load(tmp_path / "m.npz")) == ["img0.gradient", "img1.gradient"]
    assert not list(tmp_path.rglob("*.part"))


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigint_in_a_real_process(tmp_path, model):
    """SIGINT after the first line: exit 130, complete lines, their files, no partial file."""
    x = tmp_path / "x.npy"
    np.save(x, np.ones((3, 16, 16), np.float32))
    process = subprocess.Popen(
        [sys.executable, "-m", "onnxpath", "attribute", str(model), *[str(x)] * 400,
         "-m", "occlusion", "--window", "2", "--stride", "1", "-o", str(tmp_path / "out")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    first = process.stdout.readline()
    process.send_signal(signal.SIGINT)
    rest, err = read_rest(process, timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "onnxpath: interrupted"
    lines = [json.loads(line) for line in (first + rest).splitlines()]
    assert 1 <= len(lines) < 400
    for line in lines:
        assert os.path.exists(line["outputs"]["npy"])
    assert not list((tmp_path / "out").rglob("*.part"))
