"""A tiny BERT (transformers, random init, nothing downloaded) exported by torch.onnx and then
saved by ONNX Runtime's transformers optimizer (model_type "bert"), which fuses it into
EmbedLayerNormalization, Attention, SkipLayerNormalization and BiasGelu (com.microsoft).
Writes tests/intake/fixtures/ort_bert.onnx (the plain export), ort_bert.opt.onnx (the
optimized one) and ort_bert.npz: the inputs and torch's float64 gradient of the target logit
with respect to the word-embedding output. Likewise ort_gpt2.opt.onnx and ort_gpt2.npz: a
tiny GPT-2 (the next-token logits of the last position) through model_type "gpt2", which
writes SkipLayerNormalization with its sum output and FastGelu with a bias. Run from the
repository root:

    python -m tests.exporters.sources.ort_bert

(needs transformers; the tests that read the fixtures do not)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import transformers as hf
from onnxruntime.transformers.optimizer import optimize_model

FOLDER = Path(__file__).resolve().parents[2] / "intake" / "fixtures"
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


class Logits(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).logits


def tiny_bert(seed: int = 0) -> Logits:
    """Every parameter random (LayerNorm scales around 1), so no fused weight is trivial."""
    torch.manual_seed(seed)
    config = hf.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=64,
                           max_position_embeddings=32, type_vocab_size=2, num_labels=3)
    config._attn_implementation = "eager"
    model = Logits(hf.BertForSequenceClassification(config)).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn_like(parameter)
            parameter.copy_(1 + 0.2 * noise if "LayerNorm.weight" in name else 0.3 * noise)
    return model


def examples() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    ids = rng.integers(1, 64, (2, 8))
    mask = np.ones((2, 8), np.int64)
    mask[1, 6:] = 0  # the second sequence padded
    ids[1, 6:] = 0
    types = np.zeros((2, 8), np.int64)
    types[:, 5:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def float64_gradient(model: Logits, feeds: dict[str, np.ndarray]):
    """(logits, targets = argmax, d logit[target] / d word embeddings), all in float64."""
    double = model.double()
    kept = {}

    def keep(_module, _inputs, out):
        out.retain_grad()
        kept["embedding"] = out

    hook = double.model.bert.embeddings.word_embeddings.register_forward_hook(keep)
    logits = double(*(torch.from_numpy(feeds[k]) for k in INPUTS))
    hook.remove()
    targets = logits.argmax(1)
    logits[torch.arange(len(targets)), targets].sum().backward()
    return logits.detach().numpy(), targets.numpy(), kept["embedding"].grad.numpy()


class NextToken(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          use_cache=False).logits[:, -1]


def randomise(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn_like(parameter)
            scale = "ln_" in name and name.endswith("weight")
            parameter.copy_(1 + 0.2 * noise if scale else 0.3 * noise)
    return model


def build_gpt2() -> None:
    torch.manual_seed(2)
    config = hf.GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=2,
                           bos_token_id=0, eos_token_id=0)
    config._attn_implementation = "eager"
    model = randomise(NextToken(hf.GPT2LMHeadModel(config)).eval())
    feeds = examples()
    feeds = {"input_ids": feeds["input_ids"], "attention_mask": np.ones((2, 8), np.int64)}
    plain, optimized = FOLDER / "ort_gpt2.onnx", FOLDER / "ort_gpt2.opt.onnx"
    names = list(feeds)
    torch.onnx.export(model, tuple(torch.from_numpy(feeds[k]) for k in names), str(plain),
                      dynamo=False, opset_version=17, input_names=names,
                      output_names=["logits"],
                      dynamic_axes={k: {0: "N", 1: "S"} for k in names})
    optimize_model(str(plain), model_type="gpt2", num_heads=2, hidden_size=32,
                   opt_level=0).save_model_to_file(str(optimized))
    plain.unlink()  # the optimized model and the float64 reference are the fixture
    double, kept = model.double(), {}

    def keep(_module, _inputs, out):
        out.retain_grad()
        kept["embedding"] = out

    hook = double.model.transformer.wte.register_forward_hook(keep)
    logits = double(*(torch.from_numpy(feeds[k]) for k in names))
    hook.remove()
    targets = logits.argmax(1)
    logits[torch.arange(len(targets)), targets].sum().backward()
    np.savez(FOLDER / "ort_gpt2.npz", **feeds, logits=logits.detach().numpy(),
             targets=targets.numpy(), gradient=kept["embedding"].grad.numpy())
    print(f"wrote {optimized} and ort_gpt2.npz")


def build() -> None:
    FOLDER.mkdir(parents=True, exist_ok=True)
    model = tiny_bert()
    feeds = examples()
    plain, optimized = FOLDER / "ort_bert.onnx", FOLDER / "ort_bert.opt.onnx"
    axes = {k: {0: "N", 1: "S"} for k in INPUTS} | {"logits": {0: "N"}}
    torch.onnx.export(model, tuple(torch.from_numpy(feeds[k]) for k in INPUTS), str(plain),
                      dynamo=False, opset_version=17, input_names=INPUTS,
                      output_names=["logits"], dynamic_axes=axes)
    optimize_model(str(plain), model_type="bert", num_heads=2, hidden_size=32,
                   opt_level=0).save_model_to_file(str(optimized))
    logits, targets, gradient = float64_gradient(model, feeds)
    np.savez(FOLDER / "ort_bert.npz", **feeds, logits=logits, targets=targets,
             gradient=gradient)
    print(f"wrote {plain}, {optimized} and ort_bert.npz")
    build_gpt2()


if __name__ == "__main__":
    build()
