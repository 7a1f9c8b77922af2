"""The shared forward-only batching machinery, and RISE against a per-mask torch oracle."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from onnx_nets import conv_net

from onnxpath.engine import batching
from onnxpath.engine.batching import fastest_batch, forward_rows, pipelined
from onnxpath.explainer import Explainer


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(5).standard_normal((2, 3, 16, 16)).astype(np.float32)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return conv_net(tmp_path_factory.mktemp("net") / "net.onnx")


def rows_of(total: int) -> np.ndarray:
    return np.arange(total * 6, dtype=np.float32).reshape(total, 1, 2, 3)


@pytest.mark.parametrize("batch,fixed", [(1, None), (4, None), (50, None), (3, 3), (1, 5)])
def test_forward_rows_equals_one_run_over_every_row(batch, fixed):
    rows, calls = rows_of(11), []

    def forward(b):
        calls.append(len(b))
        return b.reshape(len(b), -1).sum(axis=1, keepdims=True) * np.ones((1, 2), np.float32)

    def fill(start, stop, out):
        out[:] = rows[start:stop]

    out = forward_rows(forward, 11, (1, 2, 3), fill, batch, fixed)
    np.testing.assert_array_equal(out, forward(rows))
    if fixed:
        assert set(calls[:-1]) == {fixed}
    else:
        assert max(calls[:-1]) == min(batch, 11)


def test_a_failing_builder_raises_in_the_caller():
    def batches():
        yield np.zeros((1, 1))
        raise RuntimeError("builder broke")

    with pytest.raises(RuntimeError, match="builder broke"):
        list(pipelined(lambda b: b, batches()))


def test_a_consumer_that_stops_early_ends_the_worker():
    made = []

    def batches():
        for i in range(100):
            made.append(i)
            yield np.full((1,), i)

    for out in pipelined(lambda b: b, batches()):
        if out[0] == 2:
            break
    assert len(made) < 10


def test_fastest_batch_is_measured_once_and_remembered(tmp_path, model, x, monkeypatch):
    first = Explainer(model, cache=tmp_path / "cache")
    size = first.fastest_batch(x.shape)
    assert size in batching.CANDIDATES
    memo = json.loads((tmp_path / "cache" / batching.MEMO).read_text())
    assert list(memo.values()) == [size]

    def no_measuring(*args):
        raise AssertionError("measured again")

    monkeypatch.setattr(batching, "_measure", no_measuring)
    assert first.fastest_batch(x.shape) == size  # in process
    assert Explainer(model, cache=tmp_path / "cache").fastest_batch(x.shape) == size  # on disk
    with pytest.raises(AssertionError):
        Explainer(model, cache=False).fastest_batch(x.shape)


def test_a_fixed_batch_model_runs_its_own_batch(tmp_path, x):
    fixed = Explainer(conv_net(tmp_path / "fixed.onnx", batch=2), cache=False)
    assert fastest_batch(fixed.engine(x.shape), x.shape[1:]) == 2


@pytest.mark.parametrize("method,options", [
    ("occlusion", {"window": 5, "stride": 3}),
    ("rise", {"masks": 37, "cells": 3})])
def test_results_do_not_depend_on_the_batch_size(model, x, method, options):
    explainer = Explainer(model, cache=False)
    auto = explainer.attribute(x, method, **options).maps
    for size in (1, 7, 1000):
        np.testing.assert_allclose(
            explainer.attribute(x, method, internal_batch_size=size, **options).maps, auto,
            rtol=1e-5, atol=1e-6)


def test_rise_matches_a_per_mask_torch_oracle(model, x):
    """RISE's saliency, recomputed mask by mask: the grid upsampled by torch's bilinear
    interpolation, shifted and cropped, one forward run per masked image."""
    explainer = Explainer(model, cache=False)
    masks, cells, p, seed = 23, 4, 0.4, 9
    targets = np.array([1, 0])
    ours = explainer.attribute(x, "rise", target=targets, masks=masks, cells=cells,
                               probability=p, seed=seed).maps
    rng = np.random.default_rng(seed)
    grids = rng.random((masks, cells, cells)) < p
    cell = math.ceil(16 / cells)
    shifts = np.stack([rng.integers(0, cell, masks), rng.integers(0, cell, masks)], 1)
    big = torch.nn.functional.interpolate(torch.from_numpy(grids[:, None].astype(np.float64)),
                                          size=((cells + 1) * cell,) * 2, mode="bilinear",
                                          align_corners=False)[:, 0].numpy()
    expected = np.zeros((2, 16, 16))
    for m, (dy, dx) in enumerate(shifts):
        mask = big[m, dy:dy + 16, dx:dx + 16]
        logits = explainer.predict(x * mask.astype(np.float32)).astype(np.float64)
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        expected += probs[np.arange(2), targets][:, None, None] * mask
    expected /= masks * p
    np.testing.assert_allclose(ours, np.repeat(expected[:, None], 3, axis=1), rtol=1e-5,
                               atol=1e-7)
