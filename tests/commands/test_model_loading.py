"""Loading models as users export them: external data, dynamic dims, Softmax endings."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from command_models import classifier, save

from onnxpath import Explainer
from onnxpath.errors import ModelError
from onnxpath.intake.model import load_model
from onnxpath.ort import sessions as runtime

X = np.random.default_rng(3).standard_normal((2, 3, 16, 16)).astype(np.float32)


def test_external_data_gives_the_inline_gradient(model_path, external_model_path):
    assert (external_model_path.parent / "net.bin").exists()
    proto = load_model(external_model_path)
    weights = {t.name: t for t in proto.graph.initializer}
    assert weights["w2"].data_location == onnx.TensorProto.EXTERNAL, "weights stay on disk"
    assert weights["flat_shape"].data_location != onnx.TensorProto.EXTERNAL, \
        "shape constants are read for shape inference"
    inline = Explainer(model_path).attribute(X)
    external = Explainer(external_model_path).attribute(X)
    np.testing.assert_array_equal(external.targets, inline.targets)
    np.testing.assert_allclose(external.maps, inline.maps, rtol=1e-6, atol=1e-8)


def test_gradient_session_of_an_external_model_does_not_carry_its_weights(
        external_model_path):
    engine = Explainer(external_model_path).engine(X.shape)
    graph = engine.gradient_model([engine.input_name])
    w2 = next(t for t in graph.graph.initializer if t.name == "w2")
    assert w2.data_location == onnx.TensorProto.EXTERNAL and not w2.raw_data


def test_graphs_too_big_for_one_protobuf_spill_their_weights(model_path, monkeypatch):
    expected = Explainer(model_path).attribute(X).maps
    monkeypatch.setattr(runtime, "PROTOBUF_LIMIT", 100)
    monkeypatch.setattr(runtime, "SPILL_BYTES", 64)
    np.testing.assert_allclose(Explainer(model_path).attribute(X).maps, expected, rtol=1e-6)


def test_external_data_outside_the_model_folder_is_refused(tmp_path):
    path = save(classifier(), tmp_path / "models" / "net.onnx", external=True)
    (tmp_path / "models" / "net.bin").rename(tmp_path / "x.bin")
    proto = onnx.load(str(path), load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../x.bin"
    onnx.save(proto, str(path))
    with pytest.raises(ModelError, match="outside the model's folder"):
        load_model(path)
    result = subprocess.run([sys.executable, "-m", "onnxpath", "inspect", str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "../x.bin" in lines[0] and "outside" in lines[0]


def test_missing_external_data_file_is_one_clear_error(tmp_path):
    path = save(classifier(), tmp_path / "net.onnx", external=True)
    (tmp_path / "net.bin").unlink()
    with pytest.raises(ModelError, match="net.bin.*missing"):
        load_model(path)


def test_dynamic_spatial_dims_work_at_two_sizes_and_keep_the_batch_dynamic(tmp_path):
    explainer = Explainer(save(classifier(dynamic=True), tmp_path / "dynamic.onnx"))
    for h, w in [(16, 16), (24, 20)]:
        x = np.random.default_rng(h).standard_normal((3, 3, h, w)).astype(np.float32)
        fixed = classifier()
        dims = fixed.graph.input[0].type.tensor_type.shape.dim
        dims[2].dim_value, dims[3].dim_value = h, w
        expected = Explainer(fixed).attribute(x)
        got = explainer.attribute(x)
        np.testing.assert_allclose(got.maps, expected.maps, rtol=1e-5, atol=1e-8)
        assert explainer.attribute(x[:1]).maps.shape == (1, 3, h, w), "same engine, batch 1"
    assert len(explainer._engines) == 2


@pytest.mark.parametrize("flatten", [False, True])
def test_softmax_endings_differentiate_the_logits_before_it(tmp_path, flatten):
    plain = Explainer(save(classifier(), tmp_path / "plain.onnx")).attribute(X, target=1)
    path = save(classifier(softmax=True, flatten_after_softmax=flatten), tmp_path / "sm.onnx")
    ending = Explainer(path).attribute(X, target=1)
    np.testing.assert_allclose(ending.maps, plain.maps, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(ending.logits, plain.logits, rtol=1e-6)
    kept = Explainer(path, keep_probabilities=True)
    probs = kept.predict(X)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(kept.attribute(X, target=1).maps, plain.maps)
