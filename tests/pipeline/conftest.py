"""Fixtures for the pipeline tests: a tiny classifier and a folder of inputs."""

from __future__ import annotations

import pytest
from pipeline_models import classifier, save_png


@pytest.fixture
def model(tmp_path):
    return classifier(tmp_path / "model" / "tiny.onnx")


@pytest.fixture
def images(tmp_path):
    return [save_png(tmp_path / "in" / f"img{i}.png", seed=i) for i in range(3)]
