"""The acceptance run, shared by the CLI and browser tests: the demo model's 8 sample photos
and one unreadable file (sorted last) × gradient, pathway and gradcam, with one report file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from onnxpath.cli import main

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "shapes_resnet.onnx"
SAMPLES = ROOT / "models" / "samples"
METHODS = ["gradient", "pathway", "gradcam"]


@pytest.fixture(scope="session")
def attribute_run(tmp_path_factory):
    """(exit code, out folder, inputs folder) of `onnxpath attribute ... --report`."""
    tmp = tmp_path_factory.mktemp("attribute")
    inputs = tmp / "samples"
    shutil.copytree(SAMPLES, inputs)
    (inputs / "unreadable.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp / "out"
    code = main(["attribute", str(MODEL), str(inputs), "-m", ",".join(METHODS), "-o",
                 str(out), "--report", str(out / "report.html"), "-q"])
    return code, out, inputs
