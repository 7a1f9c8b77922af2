"""--out as a URL (fsspec's in-memory filesystem stands in for s3:// and gs://), and
--provider-option reaching ONNX Runtime."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from pipeline_models import run_cli

from onnxpath.io.storage import RemotePath, location
from onnxpath.run.resume import STATE

fsspec = pytest.importorskip("fsspec")


@pytest.fixture
def memory():
    fs = fsspec.filesystem("memory")
    fs.rm("/onnxpath-test", recursive=True) if fs.exists("/onnxpath-test") else None
    yield fs
    if fs.exists("/onnxpath-test"):
        fs.rm("/onnxpath-test", recursive=True)


def test_results_uploaded_to_a_url_equal_local_ones(capsys, tmp_path, model, images, memory):
    code, local, _ = run_cli(capsys, model, *images, "-o", tmp_path / "out")
    code_url, remote, _ = run_cli(capsys, model, *images, "-o", "memory://onnxpath-test/out")
    assert code == code_url == 0
    for here, there in zip(local, remote, strict=True):
        assert there["outputs"]["npy"] == "memory://onnxpath-test/out/" + \
            here["outputs"]["npy"].rsplit("/", 1)[1]
        for key in ("npy", "png"):
            uploaded = memory.cat_file(there["outputs"][key].removeprefix("memory://"))
            assert uploaded == Path(here["outputs"][key]).read_bytes()
    names = memory.ls("/onnxpath-test/out", detail=False)
    assert not [n for n in names if n.endswith(".part")]
    assert memory.exists(f"/onnxpath-test/out/{STATE}/done/img0.json")


def test_each_file_is_one_upload(capsys, model, images, memory, monkeypatch):
    """Object stores make a single PUT atomic: no file is ever written in pieces."""
    calls = []
    original = type(memory).pipe_file

    def pipe_file(self, path, value, *args, **kwargs):
        calls.append(path)
        return original(self, path, value, *args, **kwargs)

    monkeypatch.setattr(type(memory), "pipe_file", pipe_file)
    run_cli(capsys, model, images[0], "-o", "memory://onnxpath-test/out")
    written = [c.rsplit("/", 1)[1] for c in calls]
    assert written.count("img0.gradient.npy") == written.count("img0.gradient.png") == 1
    assert written[-1] == "img0.json"  # the marker comes last


def test_a_remote_run_resumes(capsys, model, images, memory):
    url = "memory://onnxpath-test/out"
    _, first, _ = run_cli(capsys, model, *images[:2], "-o", url)
    memory.rm_file(f"/onnxpath-test/out/{STATE}/done/img0.json")
    _, lines, _ = run_cli(capsys, model, *images, "-o", url)
    assert [line["input"] for line in lines] == [str(p) for p in images]
    assert lines[1] == first[1]  # re-emitted as it was
    assert lines[0]["time_ms"] is not None
    saved = np.load(io.BytesIO(memory.cat_file("/onnxpath-test/out/img2.gradient.npy")))
    assert saved.shape == (3, 16, 16)


def test_remote_path_behaves_like_a_path():
    path = location("s3://bucket/run/out") / "cat.gradient.npy"
    assert isinstance(path, RemotePath) and str(path) == "s3://bucket/run/out/cat.gradient.npy"
    assert path.name == "cat.gradient.npy" and str(path.parent) == "s3://bucket/run/out"
    assert location("out/here").__class__.__name__.endswith("Path")
    assert not isinstance(location("out/here"), RemotePath)


def test_an_unknown_protocol_is_a_usage_error(capsys, model, images):
    code, lines, err = run_cli(capsys, model, *images, "-o", "nosuchproto://bucket/out")
    assert code == 2 and lines == [] and len(err.strip().splitlines()) == 1
    assert "nosuchproto://bucket/out" in err


def test_provider_options_reach_onnx_runtime(capsys, model, images, monkeypatch):
    seen = []
    original = ort.InferenceSession.__init__

    def spy(self, source, options=None, providers=None, **kwargs):
        seen.append(providers)
        return original(self, source, options, providers=providers, **kwargs)

    monkeypatch.setattr(ort.InferenceSession, "__init__", spy)
    code, lines, _ = run_cli(capsys, model, images[0], "--no-cache", "--provider-option",
                             "arena_extend_strategy=kSameAsRequested",
                             "--provider-option", "enable_cpu_mem_arena = 0")
    assert code == 0 and lines[0]["error"] is None and seen
    assert all(p == [("CPUExecutionProvider", {"arena_extend_strategy": "kSameAsRequested",
                                               "enable_cpu_mem_arena": "0"})] for p in seen)
    code, _, err = run_cli(capsys, model, images[0], "--provider-option", "novalue")
    assert code == 2 and "KEY=VALUE" in err


def test_inputs_read_from_a_url_give_the_local_results(capsys, tmp_path, model, images,
                                                       memory):
    for image in images:
        memory.pipe_file(f"/onnxpath-test/in/{image.name}", image.read_bytes())
    tensor = tmp_path / "t.npy"
    np.save(tensor, np.random.default_rng(0).random((3, 16, 16), np.float32))
    memory.pipe_file("/onnxpath-test/in/t.npy", tensor.read_bytes())
    _, local, _ = run_cli(capsys, model, *images, tensor, "-o", tmp_path / "local")
    code, remote, _ = run_cli(capsys, model, "memory://onnxpath-test/in/*.png",
                              "memory://onnxpath-test/in/t.npy",
                              "memory://onnxpath-test/in/gone.png", "-o", tmp_path / "remote")
    assert code == 1 and len(remote) == 5
    # fsspec spells memory-filesystem matches memory:///…; s3 and gcs keep s3://bucket/…
    assert [line["input"].replace(":///", "://") for line in remote] == [
        *(f"memory://onnxpath-test/in/{p.name}" for p in images),
        "memory://onnxpath-test/in/t.npy", "memory://onnxpath-test/in/gone.png"]
    assert remote[-1]["error"] == "input not found: memory://onnxpath-test/in/gone.png"
    for here, there in zip(local, remote, strict=False):
        assert there["error"] is None and there["logit"] == here["logit"]
        assert Path(there["outputs"]["npy"]).read_bytes() == \
            Path(here["outputs"]["npy"]).read_bytes()


def test_npz_stays_local(capsys, model, images):
    code, lines, err = run_cli(capsys, model, images[0], "--npz", "s3://bucket/maps.npz")
    assert code == 2 and lines == [] and "--npz must be a local file" in err
