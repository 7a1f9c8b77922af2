"""ONNX Runtime sessions: providers, threads, and one place that knows how to create them."""

from __future__ import annotations

import onnx
import onnxruntime as ort

from .errors import ModelError, OnnxPathError

DEVICES = ("cpu", "cuda")


def providers_for(device: str) -> list[str]:
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise OnnxPathError(
                "--device cuda needs onnxruntime-gpu with a working CUDA install; available "
                f"providers: {', '.join(ort.get_available_providers())}. "
                "Install it with: pip uninstall -y onnxruntime && pip install 'onnxpath[gpu]'")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise OnnxPathError(f"unknown device '{device}'; choose one of {', '.join(DEVICES)}")


def make_session(model: onnx.ModelProto | bytes | str, device: str = "cpu",
                 threads: int | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    try:
        return ort.InferenceSession(source, options, providers=providers_for(device))
    except OnnxPathError:
        raise
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"ONNX Runtime cannot load the model: {first}") from err
