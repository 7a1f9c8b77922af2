"""Models for the command tests, made by the tests themselves."""

from __future__ import annotations

import pytest
from command_models import classifier, save

from onnxpath.ort import external


@pytest.fixture
def model_path(tmp_path):
    return save(classifier(), tmp_path / "inline" / "net.onnx")


@pytest.fixture
def external_model_path(tmp_path, monkeypatch):
    """Every tensor in `net.bin`; only tensors under 16 elements are read eagerly, so the tiny
    model's weights behave like a big model's."""
    monkeypatch.setattr(external, "SMALL_TENSOR", 16)
    return save(classifier(), tmp_path / "external" / "net.onnx", external=True)
