"""Text: a BERT-like classifier exported by torch with int64 input_ids, attention_mask and
token_type_ids. The T×D map over the word-embedding output equals a float64 torch reference;
`tokens` gives one score per token; raw text goes through a tokenizer.json built here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onnxpath.explainer import Explainer
from onnxpath.io.text import ansi, html
from tests.io.io_helpers import run_cli
from tests.io.text_models import VOCAB, build, embedding_gradient, export

tokenizers = pytest.importorskip("tokenizers")

VOCABULARY = "the a movie was good bad great awful plot acting really not very film"
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", *VOCABULARY.split()]


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text")
    model = build()
    return model, export(model, folder / "bert.onnx"), folder


def tokenizer_file(path: Path) -> Path:
    """A word-level tokenizer.json over WORDS, with BERT's [CLS] ... [SEP] template."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)},
                                           unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer.save(str(path))
    return path


@pytest.fixture(scope="module")
def tokenizer_json(bert):
    return tokenizer_file(bert[2] / "tokenizer.json")


def relative(ours: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(ours - expected).max() / np.abs(expected).max())


def float32_gradient(model, ids, mask, types, target) -> np.ndarray:
    import torch
    words = model.embed(torch.from_numpy(ids)).detach().requires_grad_(True)
    logits = model.head(words, torch.from_numpy(mask), torch.from_numpy(types))
    logits[:, target].sum().backward()
    return words.grad.numpy()


def test_embedding_gradient_matches_torch_float64(bert):
    model, path, _ = bert
    rng = np.random.default_rng(0)
    ids = rng.integers(1, VOCAB, (2, 9))
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    types = np.zeros_like(ids)
    types[:, 5:] = 1
    explainer = Explainer(path, cache=False)
    result0 = explainer.attribute(ids, "gradient", 0)
    assert result0.wrt == "/word/Gather_output_0"
    for target in range(3):
        result = explainer.attribute({"input_ids": ids, "attention_mask": mask,
                                      "token_type_ids": types}, "gradient", target)
        expected = embedding_gradient(model, ids, mask, types, target)
        assert result.maps.shape == (2, 9, 16)
        error = relative(result.maps, expected)
        own = relative(float32_gradient(model, ids, mask, types, target), expected)
        print(f"\n[text] T×D gradient, class {target}: max relative error {error:.2e} "
              f"(torch float32: {own:.2e})")
        # float32's own error: the float32 torch model against the same float64 reference.
        assert error <= max(2 * own, 5e-7)
        # Signed sums over D: near 0 for a plain gradient here (a LayerNorm follows the
        # embeddings, and its input gradient sums to 0 over D), so compared in absolute terms.
        np.testing.assert_allclose(result.scores(), expected.sum(axis=2),
                                   atol=1e-5 * np.abs(expected).max())


def test_missing_mask_and_types_default_to_ones_and_zeros(bert):
    _, path, _ = bert
    ids = np.random.default_rng(1).integers(1, VOCAB, (1, 6))
    explainer = Explainer(path, cache=False)
    full = explainer.attribute({"input_ids": ids, "attention_mask": np.ones_like(ids),
                                "token_type_ids": np.zeros_like(ids)}).maps
    np.testing.assert_array_equal(explainer.attribute(ids).maps, full)


def test_integrated_gradients_uses_the_pad_embedding(bert):
    model, path, _ = bert
    ids = np.array([[2, 8, 6, 7, 3]])
    explainer = Explainer(path, cache=False)
    result = explainer.attribute(ids, "integrated-gradients", 0, steps=64)
    pad = model.word.weight.detach().numpy()[0]
    words = model.word.weight.detach().numpy()[ids[0]]
    # Completeness against the pad-embedding baseline, computed with torch.
    import torch
    with torch.no_grad():
        ones, zeros = torch.ones(1, 5, dtype=torch.long), torch.zeros(1, 5, dtype=torch.long)
        f_x = model.head(torch.tensor(words[None]), ones, zeros)[0, 0].item()
        f_b = model.head(torch.tensor(np.broadcast_to(pad, words.shape)[None].copy()), ones,
                         zeros)[0, 0].item()
    assert result.maps.sum() == pytest.approx(f_x - f_b, abs=2e-3)
    assert result.extras[0]["f_baseline"] == pytest.approx(f_b, abs=1e-5)


def test_raw_text_with_a_tokenizer(capsys, bert, tokenizer_json, tmp_path):
    model, path, _ = bert
    txt = tmp_path / "reviews.txt"
    txt.write_text("the movie was really good\n\nawful plot\n")
    jsonl = tmp_path / "more.jsonl"
    jsonl.write_text('{"text": "not very good acting"}\n')
    code, lines, err = run_cli(capsys, path, txt, jsonl, "--tokenizer", tokenizer_json,
                               "--text", "great film", "-m", "gradient", "-o", tmp_path / "out")
    assert code == 0, err
    assert [line["input"] for line in lines] == [f"{txt}:1", f"{txt}:3", f"{jsonl}:1",
                                                 "--text"]
    first = lines[0]
    assert [t["token"] for t in first["tokens"]] == ["[CLS]", "the", "movie", "was", "really",
                                                     "good", "[SEP]"]
    ids = np.array([[WORDS.index(t["token"]) for t in first["tokens"]]])
    expected = embedding_gradient(model, ids, np.ones_like(ids), np.zeros_like(ids),
                                  first["target"])
    raw = np.load(first["outputs"]["npy"])
    assert raw.shape == (7, 16) and relative(raw, expected[0]) <= 1e-5
    np.testing.assert_allclose([t["score"] for t in first["tokens"]], expected[0].sum(axis=1),
                               atol=1e-5 * np.abs(expected).max())
    assert first["wrt"] == "/word/Gather_output_0"
    assert len(lines[-1]["tokens"]) == 4  # [CLS] great film [SEP]


@pytest.mark.parametrize("method", ["input-x-gradient", "integrated-gradients", "smoothgrad",
                                    "occlusion", "rise", "lime", "kernel-shap"])
def test_every_method_on_text(capsys, bert, tokenizer_json, method):
    _, path, _ = bert
    code, lines, err = run_cli(capsys, path, "--text", "a very bad film", "--tokenizer",
                               tokenizer_json, "-m", method, "--samples", "64",
                               "--rise-masks", "64", "--steps", "8")
    assert code == 0, err
    assert lines[0]["error"] is None and len(lines[0]["tokens"]) == 6


def test_token_occlusion_is_the_drop_per_token(bert):
    _, path, _ = bert
    ids = np.array([[2, 8, 6, 3]])
    explainer = Explainer(path, cache=False)
    result = explainer.attribute(ids, "occlusion", 1)
    base = explainer.predict(ids)[0, 1]
    for t in range(4):
        # the pad token in place of token t (its embedding is the default baseline)
        occluded = ids.copy()
        occluded[0, t] = 0
        drop = base - explainer.predict(occluded)[0, 1]
        assert result.scores()[0, t] == pytest.approx(drop, abs=1e-5)


def test_pathway_on_gelu_needs_opted_in_layers(bert):
    _, path, _ = bert
    explainer = Explainer(path, cache=False)
    ids = np.array([[2, 8, 6, 3]])
    from onnxpath.errors import OnnxPathError
    with pytest.raises(OnnxPathError, match="--layers"):
        explainer.attribute(ids, "pathway", 0)
    with pytest.warns(UserWarning, match="linear"):
        result = explainer.attribute(ids, "pathway", 0, layers=("Erf",))
    assert result.maps.shape == (1, 4, 16)


def test_ansi_and_html_colour_every_token():
    line = ansi(["good", "bad"], np.array([1.0, -0.5]))
    assert line.count("\x1b[0m") == 2 and "good" in line and "bad" in line
    fragment = html(["good", "<b>"], np.array([1.0, -0.5]))
    assert fragment.count("<span") == 2 and "&lt;b&gt;" in fragment
    assert "rgb(255,55,55)" in fragment and "rgb(155,155,255)" in fragment


def test_python_api_carries_tokens(bert, tokenizer_json):
    from onnxpath.io.text import encode, load_tokenizer
    _, path, _ = bert
    explainer = Explainer(path, cache=False)
    feeds, tokens = encode(load_tokenizer(tokenizer_json), "a great plot", explainer.proto)
    result = explainer.attribute(feeds, "input-x-gradient", tokens=[tokens])
    assert result.tokens == [["[CLS]", "a", "great", "plot", "[SEP]"]]
    assert result.scores().shape == (1, 5) and result.wrt == "/word/Gather_output_0"
    np.testing.assert_allclose(result.scores(), result.maps.sum(axis=2), rtol=1e-6)


def test_bad_jsonl_line_and_missing_tokenizer(capsys, bert, tokenizer_json, tmp_path):
    _, path, _ = bert
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"txt": "no text field"}\n')
    good = tmp_path / "good.txt"
    good.write_text("a good film\n")
    code, lines, err = run_cli(capsys, path, bad, good, "--tokenizer", tokenizer_json)
    assert code == 1 and "'text' field" in lines[0]["error"] and lines[1]["error"] is None
    assert "Traceback" not in err
    code, _, err = run_cli(capsys, path, good)
    assert code == 2 and "--tokenizer" in err and "Traceback" not in err


def test_token_reductions(capsys, bert, tokenizer_json):
    _, path, _ = bert
    results = {}
    for reduce in ("sum", "abs-sum", "l2"):
        code, lines, _ = run_cli(capsys, path, "--text", "very bad", "--tokenizer",
                                 tokenizer_json, "--token-reduce", reduce, "-m",
                                 "input-x-gradient")
        assert code == 0
        results[reduce] = np.array([t["score"] for t in lines[0]["tokens"]])
    assert (results["abs-sum"] >= np.abs(results["sum"]) - 1e-7).all()
    assert (results["l2"] >= 0).all() and (results["l2"] <= results["abs-sum"] + 1e-7).all()


def test_embedding_lookup_wins_over_a_mask_computed_first(tmp_path):
    """The ids also feed a float padding mask, computed before the lookup in graph order:
    the attributed tensor is still the lookup's output."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((10, 4)).astype(np.float32), "table"),
             numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array(0, np.int64), "pad"),
             numpy_helper.from_array(np.array([2], np.int64), "axis")]
    nodes = [helper.make_node("Equal", ["ids", "pad"], ["is_pad"]),
             helper.make_node("Not", ["is_pad"], ["keep"]),
             helper.make_node("Cast", ["keep"], ["mask"], to=TensorProto.FLOAT),
             helper.make_node("Gather", ["table", "ids"], ["emb"]),
             helper.make_node("Unsqueeze", ["mask", "axis"], ["mask3"]),
             helper.make_node("Mul", ["emb", "mask3"], ["masked"]),
             helper.make_node("ReduceSum", ["masked", "one"], ["pooled"], keepdims=0),
             helper.make_node("MatMul", ["pooled", "w"], ["logits"])]
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "one"))
    graph = helper.make_graph(nodes, "masked_bag",
                              [helper.make_tensor_value_info("ids", TensorProto.INT64,
                                                             ["N", 5])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                             ["N", 3])], initializer=inits)
    path = tmp_path / "bag.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    ids = np.array([[3, 4, 0, 7, 0]])
    result = Explainer(path, cache=False).attribute(ids, "gradient", 1)
    assert result.wrt == "emb"
    # d logit_1 / d emb[t] = mask[t] * w[:, 1]
    weights = onnx.numpy_helper.to_array(inits[1])
    expected = (ids[0] != 0)[:, None] * weights[:, 1][None]
    np.testing.assert_allclose(result.maps[0], expected, rtol=1e-6)
