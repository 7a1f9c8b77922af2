"""Fixtures for the pipeline tests: a tiny classifier and a folder of inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from pipeline_models import classifier

from onnxpath.cli import main


@pytest.fixture
def model(tmp_path):
    return classifier(tmp_path / "model" / "tiny.onnx")


def save_png(path, seed=0, size=(20, 24), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4}.get(mode)
    shape = (size[0], size[1], channels) if channels else size
    Image.fromarray((rng.random(shape) * 255).astype(np.uint8), mode).save(path)
    return path


@pytest.fixture
def images(tmp_path):
    return [save_png(tmp_path / "in" / f"img{i}.png", seed=i) for i in range(3)]


def run_cli(capsys, *args):
    """(exit code, parsed JSON lines, stderr) of an in-process `onnxpath attribute`."""
    code = main(["attribute", *map(str, args)])
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines() if line.strip()]
    return code, lines, captured.err
