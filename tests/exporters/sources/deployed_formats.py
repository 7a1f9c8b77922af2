"""Issue 23's deployed formats as users have them: int8 models from onnxruntime.quantization
(static QDQ, static QOperator, dynamic), float16 from onnxconverter-common (float32 and float16
ends), graphs saved by ONNX Runtime's optimizer at ORT_ENABLE_EXTENDED, torch LSTM / GRU /
Einsum / PixelShuffle exports, a Hugging Face Optimum-style folder, and the input conventions
(a fixed batch of 3, no batch dim, a float64 model, opsets 7 and 8).

Each case's reference is float64, built here:
- exact formats: torch autograd on a float64 copy of the module (torch_common.references), the
  same in float32 giving float32's own error (the test allows twice that, floor 5e-6);
- float16: the float32 module's float64 gradient, at the float16-rounded input where the model
  takes float16; criterion relative error <= 2e-2 (issue 23's acceptance);
- int8: the straight-through float64 reference (tests/autodiff/quantized_reference.py: the
  quantized graph in torch float64, each quantization step a fake quantization with gradient 1
  inside the integer range, pinned to the integers ONNX Runtime computes); criterion cosine
  >= 0.95.

Needs onnxconverter-common (the float16 cases) and transformers (the BERT) at build time only:
`python -m tests.exporters.build deployed`.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from ..fixture import directional_check, relative_error, save_case
from .torch_common import export, first, references, torch_case, true_float64_softmax

F = nn.functional
IMAGE = (1, 3, 16, 16)
CLASSES = 5
FLOAT16_TOLERANCE = 2e-2  # issue 23: "float16 within 2e-2"
COSINE_FLOOR = 0.95  # issue 23: "cosine >= 0.95 against the straight-through reference"
FLOAT64_TOLERANCE = 1e-10  # a float64 model must stay float64 end to end


def image(seed: int, shape: tuple[int, ...] = IMAGE) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def seeded(cls, seed: int, *args):
    torch.manual_seed(seed)
    return cls(*args).eval()


class ReluCNN(nn.Module):
    """The quantizers' usual target: Conv + ReLU, MaxPool, global average pool, Gemm."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, CLASSES)

    def forward(self, x):
        y = F.max_pool2d(torch.relu(self.conv1(x)), 2)
        y = F.adaptive_avg_pool2d(torch.relu(self.conv2(y)), 1)
        return self.fc(y.flatten(1))


class MatMulMlp(nn.Module):
    """x @ W + b (MatMul, not Gemm): what quantize_dynamic turns into MatMulInteger."""

    def __init__(self, features: int = 16, hidden: int = 24):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(features, hidden) * 0.3)
        self.b1 = nn.Parameter(torch.randn(hidden) * 0.1)
        self.w2 = nn.Parameter(torch.randn(hidden, CLASSES) * 0.3)

    def forward(self, x):
        return torch.relu(x @ self.w1 + self.b1) @ self.w2


class FusableCNN(nn.Module):
    """What ORT_ENABLE_EXTENDED fuses: Conv + Relu (FusedConv), Gemm + Relu (FusedGemm),
    the erf GELU (Gelu, com.microsoft), MatMul + Add."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc1 = nn.Linear(8 * 4 * 4, 16)
        self.fc2 = nn.Linear(16, 16)
        self.head = nn.Linear(16, CLASSES)

    def forward(self, x):
        y = F.max_pool2d(torch.relu(self.conv(x)), 4).flatten(1)
        y = torch.relu(self.fc1(y))
        return self.head(F.gelu(self.fc2(y)))


class Recurrent(nn.Module):
    """x (N, T, F) -> LSTM or GRU -> the last step's hidden state -> logits."""

    def __init__(self, cell: type[nn.Module], features: int = 6, hidden: int = 10):
        super().__init__()
        self.rnn = cell(features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, CLASSES)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


class EinsumAttention(nn.Module):
    """Scores and mixing written as torch.einsum (ONNX Einsum)."""

    def __init__(self, dim: int = 8):
        super().__init__()
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, CLASSES)

    def forward(self, x):
        scores = torch.einsum("bid,bjd->bij", self.q(x), self.k(x)).softmax(-1)
        mixed = torch.einsum("bij,bjd->bid", scores, x)
        return self.head(torch.einsum("bid->bd", mixed))


class PixelShuffleNet(nn.Module):
    """A sub-pixel upsampler (PixelShuffle: DepthToSpace in ONNX) with ReLU pathway layers."""

    def __init__(self):
        super().__init__()
        self.expand = nn.Conv2d(3, 16, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)
        self.conv = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8, CLASSES)

    def forward(self, x):
        y = torch.relu(self.conv(self.shuffle(torch.relu(self.expand(x)))))
        return self.fc(F.adaptive_avg_pool2d(y, 1).flatten(1))


class PReluBN(nn.Module):
    """Conv, per-channel PReLU and BatchNorm: ops whose meaning moved between opsets 6 and 9
    (PRelu's slope broadcast, BatchNormalization's attributes)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.prelu = nn.PReLU(6)
        self.bn = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6 * 4 * 4, CLASSES)
        with torch.no_grad():
            self.prelu.weight.copy_(torch.linspace(-0.4, 0.6, 6))
            self.bn.running_mean.copy_(torch.linspace(-0.2, 0.2, 6))
            self.bn.running_var.copy_(torch.linspace(0.5, 1.5, 6))
            self.bn.weight.copy_(torch.linspace(0.7, 1.3, 6))
            self.bn.bias.copy_(torch.linspace(-0.1, 0.1, 6))

    def forward(self, x):
        y = F.max_pool2d(self.bn(self.prelu(self.conv(x))), 4)
        return self.fc(y.flatten(1))


class Unbatched(nn.Module):
    """x (F,) -> (K,): no batch dim at all."""

    def __init__(self, features: int = 6):
        super().__init__()
        self.fc1 = nn.Linear(features, 12)
        self.fc2 = nn.Linear(12, CLASSES)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


def float32_onnx(module: nn.Module, x: np.ndarray) -> onnx.ModelProto:
    return onnx.load_from_string(export(module, torch.from_numpy(x), "torchscript", ["logits"]))


# --- int8 ---------------------------------------------------------------------------------

class Samples:
    """onnxruntime.quantization's CalibrationDataReader protocol: eight random images."""

    def __init__(self, shape: tuple[int, ...], count: int = 8):
        self.samples = iter([{"x": image(100 + i, shape)} for i in range(count)])

    def get_next(self):
        return next(self.samples, None)


def quantization_op(op: str) -> bool:
    return "quantize" in op.lower() or op.startswith(("QLinear", "QGemm")) or op.endswith("Integer")


def quantized_case(name: str, module: nn.Module, x: np.ndarray, how: str) -> dict:
    from onnxruntime.quantization import QuantFormat, quantize_dynamic, quantize_static

    from tests.autodiff.quantized_reference import deployed_integers, run

    logging.getLogger().setLevel(logging.ERROR)  # the quantizer's "pre-process" advice
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "float.onnx", Path(folder) / "int8.onnx"
        onnx.save(float32_onnx(module, x), source)
        if how == "dynamic":
            quantize_dynamic(source, target)
        else:
            quantize_static(source, target, Samples(x.shape),
                            quant_format={"qdq": QuantFormat.QDQ,
                                          "qoperator": QuantFormat.QOperator}[how])
        model = onnx.load(target)
        deployed = ort.InferenceSession(str(target)).run(None, {"x": x})[0]
        pinned = deployed_integers(target, x)
    chosen = int(np.argmax(deployed[0]))
    output, leaf = run(model, x, pinned)
    output[0, chosen].backward()
    grad64 = leaf.grad.numpy()
    gap = relative_error(output.detach().numpy(), deployed)
    ops = sorted({n.op_type for n in model.graph.node} - {"Constant"})
    print(f"  {name}: reference forward vs ONNX Runtime {gap:.1e}; ops {ops}")
    return save_case(name, model.SerializeToString(), x, source=f"onnxruntime.quantization "
                     f"{ {'qdq': 'static QDQ', 'qoperator': 'static QOperator'}.get(how, how)}",
                     covers=[f"int8 {how}: {', '.join(o for o in ops if quantization_op(o))}",
                             *(["ReLU folded into the quantizer's clamp"] if how != "dynamic"
                               else [])],
                     target=chosen, grad64=grad64, grad32=None,
                     logits64=output.detach().numpy(),
                     reference="straight-through float64 at ORT's integers",
                     output="logits", check={"reference_forward_vs_ort": gap},
                     criterion={"kind": "cosine", "floor": COSINE_FLOOR})


# --- float16 ------------------------------------------------------------------------------

def float16_case(name: str, module: nn.Module, x: np.ndarray, keep_io_types: bool) -> dict:
    from onnxconverter_common import float16

    model = float16.convert_float_to_float16(float32_onnx(module, x),
                                             keep_io_types=keep_io_types)
    if not keep_io_types:
        x = x.astype(np.float16)  # the model takes float16: the reference is at that input
    target, logits64, grad64, grad32, reference, check = references(
        module, x.astype(np.float64), first)
    forward = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    gap = relative_error(forward, logits64)
    print(f"  {name}: float16 forward vs float64 {gap:.1e}")
    ends = "float32" if keep_io_types else "float16"
    return save_case(name, model.SerializeToString(), x,
                     source="onnxconverter-common float16",
                     covers=[f"float16 graph, {ends} inputs and outputs "
                             f"(keep_io_types={keep_io_types})"],
                     target=target, grad64=grad64, grad32=grad32, logits64=logits64,
                     reference=f"{reference} of the float32 module", output="logits",
                     check={"directional_central_differences": check,
                            "float16_forward_vs_float64": gap},
                     criterion={"kind": "relative", "tolerance": FLOAT16_TOLERANCE})


# --- ONNX Runtime's saved optimized graph -----------------------------------------------

def ort_optimized(model: bytes) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = f"{folder}/optimized.onnx"
        ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        optimized = onnx.load(options.optimized_model_filepath)
    ops = sorted({n.op_type for n in optimized.graph.node})
    assert {"FusedConv", "FusedGemm", "Gelu"} <= set(ops), ops
    print(f"  ORT_ENABLE_EXTENDED ops: {ops}")
    return optimized.SerializeToString()


def transformers_optimizer_bert_case(name: str) -> dict:
    """tests/exporters/sources/ort_bert.py's tiny random BERT, one sequence, exported and saved
    by onnxruntime.transformers.optimizer (EmbedLayerNormalization, Attention,
    SkipLayerNormalization, BiasGelu). The reference: d logit[target] / d word-embedding
    output, torch autograd in float64 (and float32 for float32's own error)."""
    import copy

    from onnxruntime.transformers.optimizer import optimize_model

    from .ort_bert import INPUTS, examples, tiny_bert

    module = tiny_bert(seed=37)
    feeds = {k: v[:1] for k, v in examples().items()}
    axes = {k: {0: "N", 1: "S"} for k in INPUTS} | {"logits": {0: "N"}}
    with tempfile.TemporaryDirectory() as folder:
        plain, optimized = Path(folder) / "plain.onnx", Path(folder) / "optimized.onnx"
        torch.onnx.export(module, tuple(torch.from_numpy(feeds[k]) for k in INPUTS),
                          str(plain), dynamo=False, opset_version=17, input_names=INPUTS,
                          output_names=["logits"], dynamic_axes=axes)
        optimize_model(str(plain), model_type="bert", num_heads=2, hidden_size=32,
                       opt_level=0).save_model_to_file(str(optimized))
        model = onnx.load(optimized)
    fused = sorted({n.op_type for n in model.graph.node if n.domain == "com.microsoft"})
    assert {"EmbedLayerNormalization", "Attention", "SkipLayerNormalization"} <= set(fused)

    def gradient(dtype, target=None):
        m, kept = copy.deepcopy(module).to(dtype), {}

        def keep(_module, _inputs, out):
            out.retain_grad()
            kept["embedding"] = out

        hook = m.model.bert.embeddings.word_embeddings.register_forward_hook(keep)
        logits = m(*(torch.from_numpy(feeds[k]) for k in INPUTS))
        hook.remove()
        target = int(logits[0].argmax()) if target is None else target
        logits[0, target].backward()
        return target, logits.detach().numpy(), kept["embedding"].grad.numpy()

    with true_float64_softmax():  # eager attention's float32 softmax, even in float64
        target, logits64, grad64 = gradient(torch.float64)
    _, _, grad32 = gradient(torch.float32, target)
    return save_case(name, model.SerializeToString(), feeds,
                     source="onnxruntime.transformers optimizer",
                     covers=[f"tiny BERT, com.microsoft {', '.join(fused)}",
                             "gradient w.r.t. the word embedding fused into "
                             "EmbedLayerNormalization"],
                     target=target, grad64=grad64, grad32=grad32, logits64=logits64,
                     reference="torch float64 autograd (word-embedding output)",
                     output="logits", wrt="word embedding (onnxpath's default for ids)")


# --- input conventions -------------------------------------------------------------------

def fixed_batch_case(name: str, batch: int) -> dict:
    """Exported at a fixed batch of `batch`; the example is one row (onnxpath tiles it)."""
    module, x = seeded(ReluCNN, 31), image(31)
    model = export(module, torch.from_numpy(np.repeat(x, batch, 0)), "torchscript", ["logits"],
                   dynamic_batch=False)
    dims = onnx.load_from_string(model).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_value == batch
    target, logits64, grad64, grad32, reference, check = references(module, x, first)
    return save_case(name, model, x, source="torch TorchScript (conventions)",
                     covers=[f"fixed batch {batch}, one example"], target=target,
                     grad64=grad64, grad32=grad32, logits64=logits64, reference=reference,
                     output="logits", check={"directional_central_differences": check})


def batchless_case(name: str) -> dict:
    module = seeded(Unbatched, 32)
    x = np.random.default_rng(32).standard_normal(6).astype(np.float32)
    model = export(module, torch.from_numpy(x), "torchscript", ["logits"], dynamic_batch=False)
    assert len(onnx.load_from_string(model).graph.input[0].type.tensor_type.shape.dim) == 1

    def gradient(dtype):
        t = torch.tensor(x.astype(np.float64), dtype=dtype, requires_grad=True)
        m = module.double() if dtype == torch.float64 else module.float()
        logits = m(t)
        return logits, torch.autograd.grad(logits[chosen], t)[0].numpy()

    with torch.no_grad():
        logits64 = module.double()(torch.tensor(x.astype(np.float64))).numpy()
    chosen = int(np.argmax(logits64))
    grad64, grad32 = gradient(torch.float64)[1], gradient(torch.float32)[1]

    def f(batch):
        with torch.no_grad():
            return module.double()(torch.tensor(batch))[:, chosen].numpy()

    check = directional_check(f, x[None], grad64[None])
    # onnxpath gives the one example a batch of 1: maps are (1, F)
    return save_case(name, model, x, source="torch TorchScript (conventions)",
                     covers=["no batch dim: input (F,), output (K,)"], target=chosen,
                     grad64=grad64[None], grad32=grad32[None], logits64=logits64[None],
                     reference="torch float64 autograd", output="logits",
                     check={"directional_central_differences": check})


class BatchedMlp(nn.Module):
    """x (N, F) -> Gemm, Tanh, Gemm: ONNX Runtime's CPU provider has float64 kernels for these
    (none for a float64 Conv)."""

    def __init__(self, features: int = 6):
        super().__init__()
        self.fc1 = nn.Linear(features, 12)
        self.fc2 = nn.Linear(12, CLASSES)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


def float64_case(name: str) -> dict:
    module, x = seeded(BatchedMlp, 33), image(33, (1, 6)).astype(np.float64)
    model = export(module.double(), torch.from_numpy(x), "torchscript", ["logits"])
    module.float()
    target, logits64, grad64, grad32, reference, check = references(module, x, first)
    return save_case(name, model, x, source="torch TorchScript (conventions)",
                     covers=["float64 model (Gemm, Tanh), float64 input"], target=target,
                     grad64=grad64,
                     grad32=grad32, logits64=logits64, reference=reference, output="logits",
                     check={"directional_central_differences": check},
                     criterion={"kind": "relative", "tolerance": FLOAT64_TOLERANCE})


# --- a Hugging Face Optimum-style folder -------------------------------------------------

def optimum_folder_case(name: str) -> dict:
    """model.onnx, config.json (id2label), preprocessor_config.json, as `optimum-cli export
    onnx` lays out an image classifier; the case is the folder itself."""
    module, x = seeded(ReluCNN, 34), image(34)
    model = export(module, torch.from_numpy(x), "torchscript", ["logits"])
    target, logits64, grad64, grad32, reference, check = references(module, x, first)
    labels = ["cat", "dog", "bird", "fish", "horse"]
    config = {"architectures": ["TinyCNNForImageClassification"], "model_type": "tiny-cnn",
              "id2label": {str(i): label for i, label in enumerate(labels)},
              "label2id": {label: i for i, label in enumerate(labels)}}
    preprocessor = {"image_processor_type": "ViTImageProcessor", "do_resize": True,
                    "size": {"height": 16, "width": 16}, "resample": 2, "do_rescale": True,
                    "rescale_factor": 1 / 255, "do_normalize": True,
                    "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    files = {"config.json": json.dumps(config, indent=1),
             "preprocessor_config.json": json.dumps(preprocessor, indent=1)}
    return save_case(name, model, x, source="Optimum-style folder",
                     covers=["model.onnx + config.json (id2label) + preprocessor_config.json"],
                     target=target, grad64=grad64, grad32=grad32, logits64=logits64,
                     reference=reference, output="logits",
                     check={"directional_central_differences": check}, folder=files)


def build() -> list[dict]:
    torch.set_num_threads(1)
    ts = "torch TorchScript"
    cases = [
        quantized_case("int8_qdq_static", seeded(ReluCNN, 21), image(21), "qdq"),
        quantized_case("int8_qoperator_static", seeded(ReluCNN, 22), image(22), "qoperator"),
        quantized_case("int8_dynamic_matmul", seeded(MatMulMlp, 23), image(23, (1, 16)),
                       "dynamic"),
        float16_case("float16_io_float32", seeded(ReluCNN, 24), image(24), True),
        float16_case("float16_io_float16", seeded(ReluCNN, 25), image(25), False),
        torch_case("ort_extended_fused", seeded(FusableCNN, 26), image(26), exporter="torchscript",
                   source="ONNX Runtime optimizer (saved)", model_hook=ort_optimized,
                   covers=["ORT_ENABLE_EXTENDED: FusedConv (Relu), FusedGemm (Relu), Gelu"]),
        transformers_optimizer_bert_case("ort_transformers_bert"),
        torch_case("torch_lstm", seeded(Recurrent, 27, nn.LSTM), image(27, (1, 5, 6)),
                   exporter="torchscript", source=ts, covers=["LSTM"]),
        torch_case("torch_gru", seeded(Recurrent, 28, nn.GRU), image(28, (1, 5, 6)),
                   exporter="torchscript", source=ts, covers=["GRU"]),
        torch_case("torch_einsum_attention", seeded(EinsumAttention, 29), image(29, (1, 4, 8)),
                   exporter="torchscript", source=ts, covers=["Einsum"]),
        torch_case("torch_pixel_shuffle", seeded(PixelShuffleNet, 30), image(30, (1, 3, 8, 8)),
                   exporter="torchscript", source=ts,
                   covers=["PixelShuffle (DepthToSpace)"]),
        fixed_batch_case("fixed_batch_3", 3),
        batchless_case("no_batch_dim"),
        float64_case("float64_model"),
        torch_case("opset7_prelu_bn", seeded(PReluBN, 35), image(35), exporter="torchscript",
                   source=ts, opset=7, covers=["opset 7: PRelu, BatchNormalization"]),
        torch_case("opset8_prelu_bn", seeded(PReluBN, 36), image(36), exporter="torchscript",
                   source=ts, opset=8, covers=["opset 8: PRelu, BatchNormalization"]),
        optimum_folder_case("optimum_image_folder"),
    ]
    return cases


if __name__ == "__main__":
    build()
