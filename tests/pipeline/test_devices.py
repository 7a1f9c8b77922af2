"""--device: provider selection, clear errors when CUDA is missing or fails to start, and the
IOBinding run path (exercised on the CPU provider, the only one the tests have)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

from onnxpath import Explainer
from onnxpath.errors import DeviceError, UsageError
from onnxpath.ort import sessions as runtime
from onnxpath.ort.sessions import check_providers, make_session, providers_for

X = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


def test_cpu_and_unknown_devices():
    assert providers_for("cpu") == ["CPUExecutionProvider"]
    with pytest.raises(UsageError, match="unknown device 'tpu'"):
        providers_for("tpu")


@pytest.mark.skipif(HAS_CUDA, reason="checks the message shown without onnxruntime-gpu")
def test_cuda_without_the_provider_says_what_to_install():
    with pytest.raises(DeviceError) as caught:
        providers_for("cuda")
    message = str(caught.value)
    assert "onnxruntime-gpu" in message and "never keep both" in message
    assert "\n" not in message


def test_cuda_provider_selected_when_available(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert providers_for("cuda") == [("CUDAExecutionProvider", {"use_tf32": "0"}),
                                     "CPUExecutionProvider"]


def test_cuda_runs_in_float32_unless_told_otherwise(monkeypatch):
    """TF32 put a ResNet-50's CUDA input gradient 3e-2 off the CPU's on an H200 and flipped
    pathway masks; exact float32 is the default, `--provider-option use_tf32=1` opts in."""
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    options = providers_for("cuda", {"use_tf32": "1", "gpu_mem_limit": 1 << 30})[0][1]
    assert options == {"use_tf32": "1", "gpu_mem_limit": str(1 << 30)}
    assert providers_for("cpu", {"arena_extend_strategy": "kSameAsRequested"})[0] == (
        "CPUExecutionProvider", {"arena_extend_strategy": "kSameAsRequested"})


def test_a_model_from_a_newer_onnx_than_the_runtime_still_loads(tmp_path):
    """onnx 1.23 writes IR 14, onnxruntime-gpu 1.31 reads up to 13: retried at the runtime's
    newest IR version, in memory and from a path."""
    from onnx import helper, save

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", 1, [2])],
                              [helper.make_tensor_value_info("y", 1, [2])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 99
    with pytest.raises(Exception, match="Unsupported model IR version: 99"):
        ort.InferenceSession(proto.SerializeToString())
    x = np.array([-1.0, 2.0], np.float32)
    assert make_session(proto).run(None, {"x": x})[0].tolist() == [0.0, 2.0]
    save(proto, str(tmp_path / "new.onnx"))
    session = runtime.open_optimised(str(tmp_path / "new.onnx"))
    assert session.run(None, {"x": x})[0].tolist() == [0.0, 2.0]


@pytest.mark.skipif(HAS_CUDA, reason="simulates a CUDA provider that fails to start")
def test_a_cuda_provider_that_fails_to_start_is_an_error_not_a_silent_cpu_run(monkeypatch,
                                                                              model):
    """Listed but unusable (e.g. cuDNN missing): ORT would quietly run on the CPU."""
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(DeviceError, match="could not start its CUDA provider"):
        make_session(str(model), device="cuda")

    class CpuOnly:
        def get_providers(self):
            return ["CPUExecutionProvider"]

    check_providers(CpuOnly(), "cpu")
    with pytest.raises(DeviceError):
        check_providers(CpuOnly(), "cuda")


@pytest.mark.skipif(HAS_CUDA, reason="checks the message shown without onnxruntime-gpu")
def test_cli_device_cuda_without_gpu_is_one_line_exit_2(tmp_path, model):
    x = tmp_path / "x.npy"
    np.save(x, X[0])
    result = subprocess.run([sys.executable, "-m", "onnxpath", "attribute", str(model), str(x),
                             "--device", "cuda", "-o", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "onnxruntime-gpu" in lines[0], result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("method", ["gradient", "pathway", "integrated-gradients"])
def test_io_binding_runs_match_plain_runs(monkeypatch, model, method):
    expected = Explainer(model, cache=False).attribute(X, method=method, steps=4)
    monkeypatch.setattr(runtime, "FORCE_IO_BINDING", True)
    bound = Explainer(model, cache=False).attribute(X, method=method, steps=4)
    np.testing.assert_allclose(bound.maps, expected.maps, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(bound.targets, expected.targets)
