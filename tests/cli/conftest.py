"""Models and inputs for the command-line tests, made by the tests themselves."""

from __future__ import annotations

import numpy as np
import pytest
from cli_models import conv_classifier
from PIL import Image


@pytest.fixture
def tiny_model(tmp_path):
    return conv_classifier(tmp_path)


@pytest.fixture
def sample_png(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "images" / "cat.png"
    path.parent.mkdir()
    Image.fromarray((rng.random((48, 40, 3)) * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture
def sample_npy(tmp_path):
    path = tmp_path / "tensor.npy"
    np.save(path, np.random.default_rng(2).standard_normal((1, 3, 32, 32)).astype(np.float32))
    return path
