"""Output folders are never inputs: a folder (or glob) input skips every sub-folder holding
`.onnxpath/`, the state every --out folder gets, on the plain engine and on Ray."""

from __future__ import annotations

import os

import pytest
from pipeline_models import run_cli, save_png

from onnxpath.io.inputs import expand_inputs


@pytest.fixture
def photos(tmp_path):
    """imgs/ with two photos, one in a sub-folder, and an old run's output folder inside."""
    inputs = [save_png(tmp_path / "imgs" / "a.png", seed=1),
              save_png(tmp_path / "imgs" / "sub" / "b.png", seed=2)]
    old = tmp_path / "imgs" / "old-run"
    save_png(old / "a.gradient.png", seed=3)
    (old / ".onnxpath" / "done").mkdir(parents=True)
    return inputs


def test_folders_and_globs_skip_output_folders(tmp_path, photos, monkeypatch):
    imgs = tmp_path / "imgs"
    assert expand_inputs([str(imgs)]) == photos
    assert expand_inputs([str(imgs / "**" / "*.png")]) == photos
    assert expand_inputs([str(imgs / "*")]) == photos  # the folder match old-run/ too
    monkeypatch.chdir(tmp_path)
    assert expand_inputs(["imgs/**/*.png"]) == [p.relative_to(tmp_path) for p in photos]
    # Named on its own, an output folder is what the user asked for.
    assert expand_inputs([str(imgs / "old-run")]) == [imgs / "old-run" / "a.gradient.png"]


def test_a_second_run_into_another_folder_explains_only_the_photos(capsys, tmp_path, model,
                                                                  photos):
    imgs = tmp_path / "imgs"
    code, first, err = run_cli(capsys, model, imgs, "-o", imgs / "out", "--size", "16x16")
    assert code == 0, err
    assert [line["input"] for line in first] == [str(p) for p in photos]
    assert (imgs / "out" / "a.gradient.png").exists()
    code, second, _ = run_cli(capsys, model, imgs, "-o", imgs / "out2", "--size", "16x16")
    assert code == 0 and [line["input"] for line in second] == [str(p) for p in photos]
    assert sorted(os.listdir(imgs / "out2")) == sorted(os.listdir(imgs / "out"))


def test_on_ray_too(capsys, tmp_path, model, photos):
    ray = pytest.importorskip("ray")
    imgs = tmp_path / "imgs"
    run_cli(capsys, model, imgs, "-o", imgs / "out", "--size", "16x16")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        code, lines, _ = run_cli(capsys, model, imgs, "-o", imgs / "out2", "--size", "16x16",
                                 "--engine", "ray", "--actors", "1", "-q")
    finally:
        ray.shutdown()
    assert code == 0 and [line["input"] for line in lines] == [str(p) for p in photos]
