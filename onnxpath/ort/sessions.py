"""ONNX Runtime sessions: providers, threads, and one place that knows how to create them."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from onnxpath.errors import DeviceError, InputError, ModelError, OnnxPathError, UsageError
from onnxpath.ort.external import has_external_data, is_external, location
from onnxpath.ort.weights import IN_MEMORY, PREFIX, file_references, shared_bytes

DEVICES = ("cpu", "cuda")
# A protobuf cannot exceed 2 GiB; stay clear of it. Tests lower this to exercise the spill path.
PROTOBUF_LIMIT = 2**31 - 2**26
SPILL_BYTES = 1 << 20  # inline initializers at least this big leave the protobuf when it is too big
# A CPU session over this much of a model's shared weights reads them in place: no pre-packed
# copies, and no constant folding, which turned a gradient's Transpose(W) into a transposed
# copy of every MatMul weight (ORT fuses Transpose + MatMul into FusedMatMul instead). A 116 MB
# ViT's gradient run: 0.45 -> 0.37 GB peak RSS, the run ~15% slower; below this size the speed
# is worth more than the memory.
LEAN_MIN_BYTES = 256 << 20
# ORT's option for models given as bytes whose external data lives in a folder.
EXTERNAL_FOLDER = "session.model_external_initializers_file_folder_path"


CUDA_HELP = ("Install it with: pip uninstall -y onnxruntime && pip install 'onnxpath[gpu]' "
             "(onnxruntime-gpu and onnxruntime share one package folder: never keep both)")


_PRELOADED: list[bool] = []


def preload_cuda_libraries() -> None:
    """onnxruntime-gpu >= 1.21 can load CUDA and cuDNN from the nvidia-* wheels
    (`pip install onnxruntime-gpu[cuda,cudnn]`) when the system has none; once per process."""
    if _PRELOADED:
        return
    _PRELOADED.append(True)
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        with contextlib.suppress(Exception):  # system libraries may serve instead
            preload()


CUDA_DEFAULTS = {"use_tf32": "0"}


def providers_for(device: str, options: dict[str, str] | None = None) -> list:
    """ONNX Runtime's provider list for `device`; `options` (--provider-option, e.g.
    gpu_mem_limit or device_id) go to the device's own provider."""
    if device == "cpu":
        names = ["CPUExecutionProvider"]
    elif device == "cuda":
        preload_cuda_libraries()
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise DeviceError(
                "--device cuda needs onnxruntime-gpu with a working CUDA install; available "
                f"providers: {', '.join(ort.get_available_providers())}. {CUDA_HELP}")
        names = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        # TF32 convolutions and matrix products (ORT's CUDA default on Ampere and later) keep
        # 10 mantissa bits: on an H200 a random-weight ResNet-50's input gradient came out 3e-2
        # off the CPU's, and pathway masks flipped (maps 0.25 off). float32 costs ~10% there.
        # `--provider-option use_tf32=1` trades that exactness for speed.
        options = {**CUDA_DEFAULTS, **(options or {})}
    else:
        raise UsageError(f"unknown device '{device}'; choose one of {', '.join(DEVICES)}")
    if options:
        return [(names[0], {k: str(v) for k, v in options.items()}), *names[1:]]
    return names


def check_providers(session: ort.InferenceSession, device: str) -> None:
    """ORT falls back to the CPU, with only a log line, when the CUDA provider is listed but its
    libraries (CUDA, cuDNN) fail to load; a run the user asked to be on the GPU must not."""
    if device == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
        raise DeviceError(
            "--device cuda: ONNX Runtime could not start its CUDA provider (are the CUDA 12 and "
            "cuDNN 9 libraries on the library path, and is a GPU visible?); use --device cpu "
            f"or fix the install. {CUDA_HELP}")


def session_options(threads: int | None, optimise: bool = True,
                    once: bool = False, brief_spin: bool = False) -> ort.SessionOptions:
    """`once`: a session that runs once or twice (the intake probe): basic optimisation and no
    pre-packed weights, which would copy every MatMul and Conv weight for two runs.
    `brief_spin`: a graph of many short kernels (a gradient graph), whose idle workers wait
    `BRIEF_SPIN_US` for the next kernel's work before they sleep (see `spin_entries`)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_BASIC if once
                                        else ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                                        if optimise
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    if once:
        options.add_session_config_entry("session.disable_prepacking", "1")
        options.enable_cpu_mem_arena = False  # an arena sized for one run is kept to no use
        # The default order runs the probe's Shape nodes last, keeping every probed
        # activation alive until then: 0.48 -> 0.27 GB for a 0.1 GB ViT's probe.
        options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    options.log_severity_level = 3
    for key, value in spin_entries(brief_spin and not once).items():
        options.add_session_config_entry(key, value)
    if threads:
        options.intra_op_num_threads = threads
    return options


# How long an idle worker of a gradient graph's session spins before it sleeps; ONNX Runtime
# bounds a spin only from 1.26 on.
BRIEF_SPIN_US = 20
BOUNDED_SPIN = tuple(int(p) for p in re.findall(r"\d+", ort.__version__)[:2]) >= (1, 26)


def spin_entries(brief: bool) -> dict[str, str]:
    """The thread pool's waiting policy.

    By default idle worker threads sleep instead of spinning. On a small, shared CPU, ORT's
    default spinning (long, and on after a run returns) steals the cores the busy threads
    need: ResNet-50 forward 66 -> 36 ms, gradient 168 -> 89 ms measured on 2 cores with
    another process running.

    A gradient graph has ~7x a forward's kernels (ResNet-50: ~450), most of them short
    reorders, masks and sums; waking a sleeping worker for each costs ~10% of the run. Its
    sessions spin briefly (`BRIEF_SPIN_US`, and never after a run returns, so the host work
    between runs keeps its cores). 2 threads, 2 cores, ResNet-50 gradient: 84 -> 77 ms alone;
    two or four processes sharing the cores: unchanged; beside a single-threaded CPU hog:
    +3-8%. A forward graph gains little from it and loses ~40% beside that hog, so it sleeps.
    ONNX Runtime bounds a spin only from 1.26 on; an older one keeps its workers asleep."""
    if brief and BOUNDED_SPIN:
        return {"session.intra_op.allow_spinning": "1",
                "session.intra_op.spin_duration_us": str(BRIEF_SPIN_US),
                "session.force_spinning_stop": "1"}
    return {"session.intra_op.allow_spinning": "0"}


IR_TOO_NEW = re.compile(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)")


def new_session(source: bytes | str, options: ort.SessionOptions,
                providers: list, disabled: list[str] | None = None) -> ort.InferenceSession:
    """An InferenceSession. A model written by an onnx newer than the runtime (onnx 1.23 writes
    IR 14; onnxruntime-gpu 1.31 reads up to 13) is retried once at the newest IR version the
    runtime names: onnxpath's graphs use nothing IR-specific, and the opsets still decide.
    `disabled`: ORT graph optimisers to leave out (see `LEAN_MIN_BYTES`)."""
    extra = {"disabled_optimizers": disabled} if disabled else {}
    try:
        return ort.InferenceSession(source, options, providers=providers, **extra)
    except Exception as err:
        found = IR_TOO_NEW.search(str(err))
        if not found:
            raise
        model = onnx.load_model_from_string(source) if isinstance(source, bytes) else \
            onnx.load(source, load_external_data=False)
        model.ir_version = int(found.group(2))
        return ort.InferenceSession(model.SerializeToString(), options, providers=providers,
                                    **extra)


def open_optimised(path: str, device: str = "cpu", threads: int | None = None,
                   provider_options: dict[str, str] | None = None,
                   brief_spin: bool = False) -> ort.InferenceSession:
    """A session over a model ORT already optimised (a cache entry): no optimisation again."""
    session = new_session(path, session_options(threads, optimise=False,
                                                brief_spin=brief_spin),
                          providers_for(device, provider_options))
    check_providers(session, device)
    return session


RUN_FAILURES = (ort.capi.onnxruntime_pybind11_state.Fail,
                ort.capi.onnxruntime_pybind11_state.RuntimeException,
                # an index out of range (token ids past the vocabulary, positions past the
                # table): the input's fault, reported on its own line
                ort.capi.onnxruntime_pybind11_state.InvalidArgument)
# Tests set this to run the IOBinding path on the CPU provider, the only one they have.
FORCE_IO_BINDING = False


def run_session(session: ort.InferenceSession, names, feeds, device: str = "cpu") -> list:
    """session.run, or on the GPU a run through IOBinding: inputs already on the device
    (OrtValues, e.g. the all-ones masks) are bound in place, outputs are allocated on the
    device and only the requested ones are copied back."""
    try:
        if device != "cuda" and not FORCE_IO_BINDING:
            return session.run(names, feeds)
        return _run_bound(session, names, feeds, device)
    except RUN_FAILURES as err:  # a kernel refused this input (e.g. smaller than a kernel)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"ONNX Runtime failed on this input: {first}") from err


def _run_bound(session: ort.InferenceSession, names, feeds, device: str) -> list:
    where = "cuda" if device == "cuda" else "cpu"
    binding = session.io_binding()
    for name, value in feeds.items():
        if isinstance(value, ort.OrtValue):
            binding.bind_ortvalue_input(name, value)
        else:
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
    for name in names or [o.name for o in session.get_outputs()]:
        binding.bind_output(name, where)
    session.run_with_iobinding(binding)
    return binding.copy_outputs_to_cpu()


def spill_large_initializers(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict]:
    """(a copy whose big inline initializers are placeholders, {name: array}) for graphs that
    would not fit one protobuf, e.g. a >2 GB model plus the flipped Conv kernels of its gradient.
    Nothing is written to disk: ORT receives the arrays as OrtValues."""
    graph = model.graph
    kept, arrays = [], {}
    for tensor in graph.initializer:
        if is_external(tensor) or len(tensor.raw_data) < SPILL_BYTES:
            kept.append(tensor)
            continue
        arrays[tensor.name] = numpy_helper.to_array(tensor)
        kept.append(placeholder(tensor))
    light = helper.make_graph(list(graph.node), graph.name, list(graph.input),
                              list(graph.output), initializer=kept,
                              value_info=list(graph.value_info))
    copy = helper.make_model(light, opset_imports=model.opset_import,
                             ir_version=model.ir_version)
    copy.metadata_props.extend(model.metadata_props)
    return copy, arrays


def placeholder(tensor: TensorProto) -> TensorProto:
    ref = TensorProto(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims,
                      data_location=TensorProto.EXTERNAL)
    for key, value in (("location", IN_MEMORY), ("offset", "0"),
                       ("length", str(len(tensor.raw_data)))):
        ref.external_data.add(key=key, value=value)
    return ref


def make_session(model: onnx.ModelProto | bytes | str, device: str = "cpu",
                 threads: int | None = None,
                 folder: str | Path | None = None,
                 save_optimised: str | Path | None = None,
                 provider_options: dict[str, str] | None = None,
                 once: bool = False, brief_spin: bool = False) -> ort.InferenceSession:
    """A session for `model`. `folder` is where the model's external data files live; a
    rewritten graph keeps referring to them, so the weights are never copied.
    `save_optimised` asks ORT to write the optimised graph there (the session cache);
    `once`: a session for one or two runs, `brief_spin` one over a gradient graph (see
    `session_options`)."""
    options = session_options(threads, once=once, brief_spin=brief_spin)
    if save_optimised is not None:
        options.optimized_model_filepath = str(save_optimised)
    source, keep_alive, disabled = model, [], None
    if isinstance(model, onnx.ModelProto):
        if device == "cpu" and not once and shared_bytes(model) >= LEAN_MIN_BYTES:
            options.add_session_config_entry("session.disable_prepacking", "1")
            disabled = ["ConstantFolding"]
        model, weights_folder = file_references(model)  # the one weights file (weights.py)
        folder = weights_folder or folder
        names, values = [], []
        if model.ByteSize() > PROTOBUF_LIMIT:
            model, arrays = spill_large_initializers(model)
            names += list(arrays)
            values += [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a))
                       for a in arrays.values()]
        if names:
            options.add_external_initializers(names, values)
            keep_alive = values  # ORT borrows these buffers for the session's lifetime
        if has_external_data(model):
            if folder is None and any(location(t) != IN_MEMORY and
                                      not location(t).startswith(PREFIX)
                                      for t in model.graph.initializer if is_external(t)):
                raise ModelError("the model keeps its weights in external data files; load it "
                                 "from its path so they can be found")
            options.add_session_config_entry(EXTERNAL_FOLDER, str(Path(folder or ".").resolve()))
        source = model.SerializeToString()
    try:
        session = new_session(source, options, providers_for(device, provider_options),
                              disabled)
    except OnnxPathError:
        raise
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"ONNX Runtime cannot load the model: {first}") from err
    check_providers(session, device)
    session.onnxpath_borrowed = keep_alive
    return session
