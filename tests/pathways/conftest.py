"""Tiny torch-defined networks (random weights, 32 px) exported to ONNX once per session."""

from __future__ import annotations

import numpy as np
import pytest

from onnxpath.explainer import Explainer

from .reference import TinyMobile, TinyResNet, TinyVGG, export, randomise


class Case:
    def __init__(self, torch_model, dynamic_batch: bool = True):
        self.torch = torch_model
        self.proto = export(torch_model, dynamic_batch=dynamic_batch)
        self.explainer = Explainer(self.proto)

    def engine(self, x: np.ndarray):
        return self.explainer.engine(x.shape)


@pytest.fixture(scope="session")
def vgg() -> Case:
    return Case(randomise(TinyVGG, 0))


@pytest.fixture(scope="session")
def resnet() -> Case:
    return Case(randomise(TinyResNet, 1))


@pytest.fixture(scope="session")
def resnet_fixed_batch() -> Case:
    return Case(randomise(TinyResNet, 1), dynamic_batch=False)


@pytest.fixture(scope="session")
def mobile() -> Case:
    return Case(randomise(TinyMobile, 2))


@pytest.fixture(params=["vgg", "resnet", "mobile"])
def case(request) -> Case:
    return request.getfixturevalue(request.param)


def image(seed: int, n: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 32, 32)).astype(np.float32)
