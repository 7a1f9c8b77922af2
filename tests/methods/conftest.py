"""Torch networks exported once per module, their float64 twins for Captum, and inputs."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
from torch_nets import ReLUFamilyNet, ResidualNet, VGGNet, build, export

from onnxpath.explainer import Explainer


def _pair(cls, tmp_path_factory):
    model = build(cls)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = export(model, tmp_path_factory.mktemp(cls.__name__) / "model.onnx")
    # Captum runs in float64, so the reference carries no float32 error of its own.
    return Explainer(path), copy.deepcopy(model).double()


@pytest.fixture(scope="session")
def residual(tmp_path_factory):
    return _pair(ResidualNet, tmp_path_factory)


@pytest.fixture(scope="session")
def vgg(tmp_path_factory):
    return _pair(VGGNet, tmp_path_factory)


@pytest.fixture(scope="session")
def relu_family(tmp_path_factory):
    return _pair(ReLUFamilyNet, tmp_path_factory)


@pytest.fixture(scope="session")
def batch():
    return np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
