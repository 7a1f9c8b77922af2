"""Fixtures for the distributed tests: the pipeline tests' tiny classifier."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "pipeline"))
from pipeline_models import classifier  # noqa: E402


@pytest.fixture
def model(tmp_path):
    return classifier(tmp_path / "model" / "tiny.onnx")
