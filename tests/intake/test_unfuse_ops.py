"""ONNX Runtime's contrib ops one by one (intake/unfuse*.py): each single-op model, followed by
Flatten and a fixed MatMul to 3 logits, is unfused into standard ops that compute what ONNX
Runtime's kernel does (forward, float32), and onnxpath's gradient of it matches torch's float64
autograd of the op written from ONNX Runtime's contrib-op documentation. The torch reference
is itself checked against ONNX Runtime's kernel, so both sides stand on the kernel."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxpath.explainer import Explainer
from onnxpath.intake.unfuse import unfuse

torch = pytest.importorskip("torch")
F = torch.nn.functional
MS = "com.microsoft"
N, S, D, HEADS = 2, 5, 8, 2
RNG = np.random.default_rng(0)


def normal(*shape, scale=1.0) -> np.ndarray:
    return (scale * RNG.normal(size=shape)).astype(np.float32)


@dataclass
class Case:
    op: str
    inputs: list  # (name, array, graph input?) in the op's input order; "" for absent
    reference: object  # torch float64: dict of tensors -> the op's output
    attrs: dict = field(default_factory=dict)
    domain: str = MS
    opset: int = 17
    wrt: bool = False  # attributed: the word lookup's output (EmbedLayerNormalization)
    kernel: bool = True  # ONNX Runtime's CPU provider has a kernel (not BiasAdd, GemmFastGelu)


def ln(x, gamma, beta, eps=1e-5):
    return F.layer_norm(x, (x.shape[-1],), gamma, beta, eps)


def rms(x, gamma, eps=1e-5):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * gamma


def heads(t, size):  # N×S×(h·size) -> N×h×S×size
    return t.reshape(t.shape[0], t.shape[1], -1, size).transpose(1, 2)


def sdpa(q, k, v, n_heads, additive=0.0, scale=None):
    size = q.shape[-1] // n_heads
    scores = heads(q, size) @ heads(k, size).transpose(-1, -2)
    scores = scores * (scale or 1 / math.sqrt(size)) + additive
    out = torch.softmax(scores, -1) @ heads(v, v.shape[-1] // n_heads)
    return out.transpose(1, 2).reshape(q.shape[0], q.shape[1], -1)


def key_mask(mask, keys):  # -10000 where a key is hidden, as ONNX Runtime's kernels add
    if mask.dim() == 1:
        mask = (torch.arange(keys)[None] < mask[:, None]).double()
    return ((mask <= 0).double() * -10000.0)[:, None, None, :]


def causal(length):
    return torch.triu(torch.ones(length, length), 1).double() * -10000.0


def attention_ref(t, bias_hidden=(D, D, D), **kw):
    qkv = t["x"] @ t["w"] + t["b"]
    q, k, v = torch.split(qkv, list(bias_hidden), -1)
    return sdpa(q, k, v, HEADS, **kw)


def rotary_ref(t, interleaved, offset=None):
    x = t["x"]
    positions = t["pos"] if offset is None else (torch.arange(S) + int(offset))[None]
    cos, sin = t["cos"][positions.long()], t["sin"][positions.long()]  # N×S×half
    if x.dim() == 4:  # N×heads×S×H
        cos, sin = cos[:, None], sin[:, None]
        x1, x2 = x.chunk(2, -1)
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)
    rows = x.reshape(N, S, HEADS, -1)
    cos, sin = cos[:, :, None], sin[:, :, None]
    if interleaved:
        x1, x2 = rows[..., 0::2], rows[..., 1::2]
    else:
        x1, x2 = rows.chunk(2, -1)
    real, imag = x1 * cos - x2 * sin, x1 * sin + x2 * cos
    out = torch.stack([real, imag], -1).flatten(-2) if interleaved else torch.cat([real, imag], -1)
    return out.reshape(N, S, -1)


LENGTHS = np.array([5, 3], np.int32)
RAW = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], np.int32)
TABLE = normal(16, 4)
x, skip, g, beta, bias = normal(N, S, D), normal(N, S, D), normal(D) + 1, normal(D), normal(D)
qkv_w, qkv_b = normal(D, 3 * D, scale=0.5), normal(3 * D)
CASES = {
    "FusedMatMul_transA_alpha": Case("FusedMatMul", [("x", normal(N, 4, 3), True),
                                                     ("w", normal(4, 5), False)],
                                     lambda t: 0.7 * t["x"].transpose(-1, -2) @ t["w"],
                                     {"alpha": 0.7, "transA": 1}),
    "FusedMatMul_transB": Case("FusedMatMul", [("x", normal(N, 3, 4), True),
                                               ("w", normal(5, 4), False)],
                               lambda t: t["x"] @ t["w"].T, {"transB": 1}),
    "QuickGelu": Case("QuickGelu", [("x", x, True)],
                      lambda t: t["x"] * torch.sigmoid(1.5 * t["x"]), {"alpha": 1.5}),
    "BiasAdd": Case("BiasAdd", [("x", x, True), ("b", bias, False), ("s", skip, True)],
                    lambda t: t["x"] + t["b"] + t["s"], kernel=False),
    "GemmFastGelu": Case("GemmFastGelu", [("x", x, True), ("w", normal(D, 6), False),
                                          ("b", normal(6), False)],
                         lambda t: F.gelu(t["x"] @ t["w"] + t["b"], approximate="tanh"),
                         kernel=False),
    "BiasGelu": Case("BiasGelu", [("x", x, True), ("b", bias, False)],
                     lambda t: F.gelu(t["x"] + t["b"])),
    "SkipLayerNormalization": Case(
        "SkipLayerNormalization", [("x", x, True), ("s", skip, True), ("g", g, False),
                                   ("beta", beta, False), ("b", bias, False)],
        lambda t: ln(t["x"] + t["s"] + t["b"], t["g"], t["beta"], 1e-6), {"epsilon": 1e-6}),
    "SkipLayerNormalization_opset14": Case(
        "SkipLayerNormalization", [("x", x, True), ("s", skip, True), ("g", g, False),
                                   ("beta", beta, False)],
        lambda t: ln(t["x"] + t["s"], t["g"], t["beta"], 1e-6), {"epsilon": 1e-6}, opset=14),
    "LayerNormalization_opset14": Case(
        "LayerNormalization", [("x", x, True), ("g", g, False), ("beta", beta, False)],
        lambda t: ln(t["x"], t["g"], t["beta"]), {"axis": -1, "epsilon": 1e-5}, domain="",
        opset=14),
    "SimplifiedLayerNormalization": Case(
        "SimplifiedLayerNormalization", [("x", x, True), ("g", g, False)],
        lambda t: rms(t["x"], t["g"]), {"axis": -1, "epsilon": 1e-5}, domain=""),
    "SkipSimplifiedLayerNormalization": Case(
        "SkipSimplifiedLayerNormalization", [("x", x, True), ("s", skip, True),
                                             ("g", g, False), ("b", bias, False)],
        lambda t: rms(t["x"] + t["s"] + t["b"], t["g"], 1e-6), {"epsilon": 1e-6}),
    "EmbedLayerNormalization": Case(
        "EmbedLayerNormalization",
        [("ids", RNG.integers(0, 16, (N, S)).astype(np.int32), True),
         ("seg", np.array([[0, 0, 1, 1, 1]] * N, np.int32), True), ("word", normal(16, D), False),
         ("posemb", normal(8, D), False), ("segemb", normal(2, D), False), ("g", g, False),
         ("beta", beta, False)],
        lambda t: ln(t["word_out"] + t["posemb"][:S] + t["segemb"][t["seg"].long()], t["g"],
                     t["beta"], 1e-12), wrt=True),
    "EmbedLayerNormalization_position_ids": Case(
        "EmbedLayerNormalization",
        [("ids", RNG.integers(0, 16, (N, S)).astype(np.int32), True), ("", None, False),
         ("word", normal(16, D), False), ("posemb", normal(8, D), False), ("", None, False),
         ("g", g, False), ("beta", beta, False), ("", None, False),
         ("posids", np.array([[3, 4, 5, 6, 7]] * N, np.int32), True)],
        lambda t: ln(t["word_out"] + t["posemb"][t["posids"].long()], t["g"], t["beta"], 1e-4),
        {"epsilon": 1e-4}, wrt=True),
    "Attention": Case("Attention", [("x", x, True), ("w", qkv_w, False), ("b", qkv_b, False)],
                      attention_ref, {"num_heads": HEADS}),
    "Attention_lengths": Case(
        "Attention", [("x", x, True), ("w", qkv_w, False), ("b", qkv_b, False),
                      ("mask", LENGTHS, True)],
        lambda t: attention_ref(t, additive=key_mask(t["mask"], S)), {"num_heads": HEADS}),
    "Attention_raw_mask_causal_scale": Case(
        "Attention", [("x", x, True), ("w", qkv_w, False), ("b", qkv_b, False),
                      ("mask", RAW, True)],
        lambda t: attention_ref(t, additive=key_mask(t["mask"], S) + causal(S), scale=0.3),
        {"num_heads": HEADS, "unidirectional": 1, "scale": 0.3}),
    "Attention_qkv_sizes_bias": Case(
        "Attention", [("x", x, True), ("w", normal(D, 2 * D + 4, scale=0.5), False),
                      ("b", normal(2 * D + 4), False), ("", None, False), ("", None, False),
                      ("ab", normal(1, HEADS, S, S), False)],
        lambda t: attention_ref(t, bias_hidden=(D, D, 4), additive=t["ab"]),
        {"num_heads": HEADS, "qkv_hidden_sizes": [D, D, 4]}),
    "MultiHeadAttention": Case(
        "MultiHeadAttention", [("x", x, True), ("k", normal(N, 4, D), True),
                               ("v", normal(N, 4, 6), True), ("b", normal(2 * D + 6), False),
                               ("kmask", RAW[:, :4], True)],
        lambda t: sdpa(t["x"] + t["b"][:D], t["k"] + t["b"][D:2 * D], t["v"] + t["b"][2 * D:],
                       HEADS, key_mask(t["kmask"], 4)), {"num_heads": HEADS}),
    "RotaryEmbedding": Case(
        "RotaryEmbedding", [("x", x, True), ("pos", np.array([[0, 1, 2, 3, 4], [3, 4, 5, 6, 7]],
                                                               np.int64), True),
                            ("cos", normal(8, 2), False), ("sin", normal(8, 2), False)],
        lambda t: rotary_ref(t, False), {"num_heads": HEADS}),
    "RotaryEmbedding_interleaved_offset": Case(
        "RotaryEmbedding", [("x", x, True), ("pos", np.array([2], np.int64), False),
                            ("cos", normal(8, 2), False), ("sin", normal(8, 2), False)],
        lambda t: rotary_ref(t, True, offset=2), {"num_heads": HEADS, "interleaved": 1}),
    "RotaryEmbedding_4d": Case(
        "RotaryEmbedding", [("x", normal(N, HEADS, S, 4), True),
                            ("pos", np.array([[0, 1, 2, 3, 4], [2, 3, 4, 5, 6]], np.int64), True),
                            ("cos", normal(8, 2), False), ("sin", normal(8, 2), False)],
        lambda t: rotary_ref(t, False)),
}


def value_info(name: str, array: np.ndarray):
    dims = ["N", *array.shape[1:]] if array.ndim > 1 or name in ("mask",) else list(array.shape)
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(array.dtype),
                                         dims)


def reference_forward(case: Case, gradient_of: str | None = None):
    tensors = {n: torch.from_numpy(a.astype(np.float64) if a.dtype == np.float32 else a)
               for n, a, _ in case.inputs if n}
    if case.wrt:  # the embedding lookup's output, as the intake attributes it
        tensors["word_out"] = tensors["word"][tensors["ids"].long()]
        gradient_of = gradient_of and "word_out"
    leaf = tensors[gradient_of] if gradient_of else None
    if leaf is not None:
        leaf.requires_grad_(True)
    return case.reference(tensors), leaf


def build(case: Case, head: np.ndarray) -> onnx.ModelProto:
    names = [n for n, _, _ in case.inputs]
    inits = [numpy_helper.from_array(a, n) for n, a, graph_input in case.inputs
             if n and not graph_input]
    inits.append(numpy_helper.from_array(head, "head"))
    inputs = [value_info(n, a) for n, a, graph_input in case.inputs if n and graph_input]
    outputs = ["y", "mask_index"] if case.wrt else ["y"]  # the kernel wants mask_index
    nodes = [helper.make_node(case.op, names, outputs, domain=case.domain, **case.attrs),
             helper.make_node("Flatten", ["y"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "head"], ["logits"])]
    graph = helper.make_graph(nodes, case.op, inputs,
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                             ["N", 3])], inits)
    imports = [helper.make_opsetid("", case.opset), helper.make_opsetid(MS, 1)]
    return helper.make_model(graph, opset_imports=imports)


def run(model: onnx.ModelProto, feeds: dict) -> np.ndarray:
    """Without graph optimisations, so ONNX Runtime cannot fuse the unfused graph back."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


@pytest.mark.parametrize("name", list(CASES))
def test_contrib_op_unfused_forward_and_gradient(name, tmp_path):
    case = CASES[name]
    out, _ = reference_forward(case)
    head = normal(int(np.prod(out.shape[1:])), 3, scale=0.3)
    fused = build(case, head)
    plain = unfuse(fused)
    assert not any(n.domain == MS or n.op_type == case.op for n in plain.graph.node)
    feeds = {n: a for n, a, graph_input in case.inputs if n and graph_input}
    ours = run(plain, feeds)
    torch_logits = (out.reshape(N, -1) @ torch.from_numpy(head).double()).detach().numpy()
    kernel = run(fused, feeds) if case.kernel else torch_logits
    forward = np.abs(ours - kernel).max() / np.abs(kernel).max()
    torch_vs_kernel = np.abs(torch_logits - kernel).max() / np.abs(kernel).max()
    onnx.save(fused, tmp_path / "fused.onnx")
    primary = case.inputs[0][0]
    result = Explainer(tmp_path / "fused.onnx", cache=False).attribute(
        {primary: feeds[primary], **feeds}, "gradient")
    targets = np.asarray(result.targets)
    out, leaf = reference_forward(case, primary)
    logits = out.reshape(N, -1) @ torch.from_numpy(head).double()
    logits[torch.arange(N), torch.from_numpy(targets)].sum().backward()
    want = leaf.grad.numpy()
    error = np.abs(result.maps - want).max() / np.abs(want).max()
    against = "ORT kernel" if case.kernel else "torch float64 (no CPU kernel)"
    print(f"{name}: forward vs {against} {forward:.1e} (torch float64 vs kernel "
          f"{torch_vs_kernel:.1e}), gradient vs torch float64 {error:.1e}")
    assert forward <= 1e-5 and torch_vs_kernel <= 1e-5
    assert error <= 1e-4
