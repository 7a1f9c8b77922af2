"""A tiny BERT saved by ONNX Runtime's transformers optimizer (EmbedLayerNormalization,
Attention, SkipLayerNormalization, BiasGelu; fixtures built by
tests/exporters/sources/ort_bert.py) explains as its plain torch export does: unfused
(intake/unfuse*.py) it computes the same logits, its word-embedding gradient matches torch's
float64 one, and the token scores, through the API and the CLI, equal the plain export's.
So does the same BERT saved by ONNX Runtime's graph optimizer (FusedMatMul, FusedGemm,
BiasGelu), and a tiny GPT-2 through the transformers optimizer (SkipLayerNormalization with
its sum output, FastGelu) matches torch float64."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnxruntime.transformers.fusion_options import AttentionMaskFormat, FusionOptions
from onnxruntime.transformers.optimizer import optimize_model

from onnxpath.explainer import Explainer
from onnxpath.intake.unfuse import unfuse
from onnxpath.intake.wrt import find_embedding
from tests.io.io_helpers import run_cli

FIXTURES = Path(__file__).parent / "fixtures"
PLAIN, OPTIMIZED = FIXTURES / "ort_bert.onnx", FIXTURES / "ort_bert.opt.onnx"
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
FUSED = {"EmbedLayerNormalization", "Attention", "SkipLayerNormalization", "BiasGelu"}


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(FIXTURES / "ort_bert.npz"))


def feeds(reference) -> dict[str, np.ndarray]:
    return {k: reference[k] for k in INPUTS}


def run(model, inputs) -> np.ndarray:
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, inputs)[0]


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_unfused_bert_computes_the_optimized_logits(reference):
    fused = onnx.load(str(OPTIMIZED))
    assert {n.op_type for n in fused.graph.node if n.domain == "com.microsoft"} == FUSED
    plain = unfuse(fused)
    assert not any(n.domain == "com.microsoft" for n in plain.graph.node)
    onnx.checker.check_model(plain, full_check=True)
    x = feeds(reference)
    ours, theirs = run(plain, x), run(fused, x)
    diff = np.abs(ours - theirs).max()
    print(f"BERT unfused vs optimized logits: max abs diff {diff:.2e}; vs float64 torch "
          f"{np.abs(ours - reference['logits']).max():.2e}")
    assert diff <= 1e-5 * np.abs(theirs).max()
    assert np.abs(ours - reference["logits"]).max() <= 1e-4 * np.abs(theirs).max()


def test_the_word_embedding_is_found_in_the_optimized_model():
    assert find_embedding(onnx.load(str(OPTIMIZED))) is not None


@pytest.mark.parametrize("path", [OPTIMIZED, PLAIN], ids=["optimized", "plain"])
def test_gradient_matches_torch_float64(reference, path):
    result = Explainer(path, cache=False).attribute(feeds(reference), "gradient",
                                                      reference["targets"])
    want = reference["gradient"]
    assert result.maps.shape == want.shape == (2, 8, 32)
    error = np.abs(result.maps - want).max() / np.abs(want).max()
    print(f"{path.name}: gradient vs torch float64 relative error {error:.2e}")
    assert error <= 1e-4


@pytest.mark.parametrize("method", ["input-x-gradient", "integrated-gradients"])
def test_token_scores_equal_the_plain_exports(reference, method):
    """Token scores (the T×D map summed over D; a plain gradient's sum is ~0 here, since a
    LayerNorm follows the embeddings), integrated gradients from the pad row's embedding."""
    options = {"steps": 16} if method != "input-x-gradient" else {}
    maps = {}
    for path in (PLAIN, OPTIMIZED):
        result = Explainer(path, cache=False).attribute(feeds(reference), method,
                                                          reference["targets"], **options)
        maps[path] = result.maps.sum(axis=-1)
    plain, optimized = maps[PLAIN], maps[OPTIMIZED]
    diff, r = np.abs(plain - optimized).max(), pearson(plain, optimized)
    print(f"{method}: token scores optimized vs plain: max abs diff {diff:.2e} "
          f"(scale {np.abs(plain).max():.2e}), Pearson {r:.7f}")
    assert r >= 0.9999
    assert diff <= 1e-4 * np.abs(plain).max()


def ort_extended(tmp_path) -> Path:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "ort_bert.ext.onnx")
    ort.InferenceSession(str(PLAIN), options, providers=["CPUExecutionProvider"])
    return tmp_path / "ort_bert.ext.onnx"


def test_graph_optimizer_bert_matches_torch_float64(reference, tmp_path):
    path = ort_extended(tmp_path)
    found = {n.op_type for n in onnx.load(str(path)).graph.node if n.domain == "com.microsoft"}
    assert {"FusedMatMul", "BiasGelu"} <= found, found
    result = Explainer(path, cache=False).attribute(feeds(reference), "gradient",
                                                      reference["targets"])
    want = reference["gradient"]
    error = np.abs(result.maps - want).max() / np.abs(want).max()
    print(f"ORT_ENABLE_EXTENDED BERT ({sorted(found)}): gradient vs torch float64 {error:.2e}")
    assert error <= 1e-4


VARIANTS = {"multi_head_attention": {"use_multi_head_attention": True},
            "raw_attention_mask": {"attention_mask_format": AttentionMaskFormat.AttentionMask},
            "no_embed_layer_norm": {"enable_embed_layer_norm": False},
            "int32_inputs": {}}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_optimizer_variants_match_torch_float64(reference, tmp_path, variant):
    """The transformers optimizer's other forms of the same BERT: MultiHeadAttention on the
    separate projections, Attention with the raw 0/1 mask, Attention on a ReduceSum mask index
    with a plain embedding, and int32 graph inputs (change_graph_inputs_to_int32) that
    EmbedLayerNormalization reads with no Cast."""
    options = FusionOptions("bert")
    for key, value in VARIANTS[variant].items():
        setattr(options, key, value)
    path = tmp_path / f"{variant}.onnx"
    optimized = optimize_model(str(PLAIN), model_type="bert", num_heads=2, hidden_size=32,
                               opt_level=0, optimization_options=options)
    if variant == "int32_inputs":
        optimized.change_graph_inputs_to_int32()
    optimized.save_model_to_file(str(path))
    fused = onnx.load(str(path))
    found = {n.op_type for n in fused.graph.node if n.domain == "com.microsoft"}
    assert ("MultiHeadAttention" if variant == "multi_head_attention" else "Attention") in found
    plain = unfuse(fused)
    assert not any(n.domain == "com.microsoft" for n in plain.graph.node)
    x = {k: v.astype(np.int32) if variant == "int32_inputs" else v
         for k, v in feeds(reference).items()}
    forward = np.abs(run(plain, x) - reference["logits"]).max()
    result = Explainer(path, cache=False).attribute(feeds(reference), "gradient",
                                                      reference["targets"])
    want = reference["gradient"]
    error = np.abs(result.maps - want).max() / np.abs(want).max()
    print(f"BERT {variant} ({sorted(found)}): logits vs float64 {forward:.1e}, gradient vs "
          f"torch float64 {error:.2e}")
    assert forward <= 1e-4 * np.abs(reference["logits"]).max()
    assert error <= 1e-4


def test_gpt2_through_the_optimizer_matches_torch_float64():
    path = FIXTURES / "ort_gpt2.opt.onnx"
    found = {n.op_type for n in onnx.load(str(path)).graph.node if n.domain == "com.microsoft"}
    assert {"SkipLayerNormalization", "FastGelu"} <= found, found
    gpt2 = np.load(FIXTURES / "ort_gpt2.npz")
    result = Explainer(path, cache=False).attribute(
        {k: gpt2[k] for k in ("input_ids", "attention_mask")}, "gradient", gpt2["targets"])
    want = gpt2["gradient"]
    error = np.abs(result.maps - want).max() / np.abs(want).max()
    print(f"GPT-2 ({sorted(found)}): gradient vs torch float64 {error:.2e}")
    assert error <= 1e-4


def tokenizer_file(path: Path) -> Path:
    """A word-level tokenizer.json over 64 made-up words, with BERT's [CLS] … [SEP]."""
    tokenizers = pytest.importorskip("tokenizers")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", *(f"w{i}" for i in range(60))]
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(
        {w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer.post_processor = tokenizers.processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer.save(str(path))
    return path


@pytest.mark.parametrize("flags", [[], ["-m", "input-x-gradient"],
                                   ["--target", "1", "-m", "integrated-gradients", "--steps", "8"]],
                         ids=["default", "input-x-gradient", "target"])
def test_cli_explains_the_optimized_bert_as_the_plain_one(capsys, tmp_path, flags):
    tokenizer = tokenizer_file(tmp_path / "tokenizer.json")
    scores = {}
    for path in (PLAIN, OPTIMIZED):
        code, lines, err = run_cli(capsys, path, "--text", "w5 w17 w3 w40 w8", "--tokenizer",
                                   tokenizer, *flags, "-o", tmp_path / path.stem)
        assert code == 0, err
        assert lines[0]["error"] is None, lines[0]
        assert len(lines[0]["tokens"]) == 7
        raw = np.load(lines[0]["outputs"]["npy"])
        assert raw.shape == (7, 32)
        scores[path] = (raw, np.array([t["score"] for t in lines[0]["tokens"]]))
    scale = np.abs(scores[PLAIN][0]).max()
    for kind, (plain, optimized) in zip(("T×D map", "token scores"),
                                        zip(scores[PLAIN], scores[OPTIMIZED], strict=True),
                                        strict=True):
        diff, r = np.abs(plain - optimized).max(), pearson(plain, optimized)
        print(f"CLI {flags or 'default'}: {kind} max abs diff {diff:.2e}, Pearson {r:.7f}")
        assert diff <= 1e-4 * scale
        if kind == "T×D map" or flags:  # a gradient's token sums are ~0 (LayerNorm follows)
            assert r >= 0.9999
