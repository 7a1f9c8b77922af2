"""A BERT-like classifier written in torch (word, position and token-type embeddings, LayerNorm,
masked multi-head self-attention, a GELU feed-forward block, a tanh pooler), exported with int64
input_ids, attention_mask and token_type_ids, and the same network's float64 reference of the
gradient with respect to the word-embedding output."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

VOCAB, DIM, HEADS, CLASSES, MAX_LEN = 40, 16, 2, 3, 32


class TinyBert(nn.Module):
    def __init__(self, layers: int = 1, activation: str = "gelu"):
        super().__init__()
        self.word = nn.Embedding(VOCAB, DIM)
        self.position = nn.Embedding(MAX_LEN, DIM)
        self.token_type = nn.Embedding(2, DIM)
        self.norm = nn.LayerNorm(DIM)
        self.blocks = nn.ModuleList(Block(activation) for _ in range(layers))
        self.pooler = nn.Linear(DIM, DIM)
        self.classifier = nn.Linear(DIM, CLASSES)

    def embed(self, input_ids):
        return self.word(input_ids)

    def head(self, words, attention_mask, token_type_ids):
        length = words.shape[1]
        positions = torch.arange(length, device=words.device)[None]
        h = self.norm(words + self.position(positions) + self.token_type(token_type_ids))
        bias = (1.0 - attention_mask[:, None, None, :].to(h.dtype)) * -10000.0
        for block in self.blocks:
            h = block(h, bias)
        return self.classifier(torch.tanh(self.pooler(h[:, 0])))

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.head(self.embed(input_ids), attention_mask, token_type_ids)


class Block(nn.Module):
    def __init__(self, activation: str):
        super().__init__()
        self.qkv = nn.Linear(DIM, 3 * DIM)
        self.out = nn.Linear(DIM, DIM)
        self.norm1 = nn.LayerNorm(DIM)
        self.ff1 = nn.Linear(DIM, 2 * DIM)
        self.ff2 = nn.Linear(2 * DIM, DIM)
        self.norm2 = nn.LayerNorm(DIM)
        self.act = nn.GELU() if activation == "gelu" else nn.ReLU()

    def forward(self, h, bias):
        n, t, _ = h.shape
        q, k, v = self.qkv(h).reshape(n, t, 3, HEADS, DIM // HEADS).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(DIM // HEADS) + bias
        context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, t, DIM)
        h = self.norm1(h + self.out(context))
        return self.norm2(h + self.ff2(self.act(self.ff1(h))))


def build(seed: int = 0, **kwargs) -> TinyBert:
    torch.manual_seed(seed)
    return TinyBert(**kwargs).eval()


def export(model: TinyBert, path: Path, length: int = 8) -> Path:
    ids = torch.ones(1, length, dtype=torch.long)
    dynamic = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(path),
                          dynamo=False, opset_version=17,
                          input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["logits"],
                          dynamic_axes={"input_ids": dynamic, "attention_mask": dynamic,
                                        "token_type_ids": dynamic, "logits": {0: "batch"}})
    return path


def embedding_gradient(model: TinyBert, ids: np.ndarray, mask: np.ndarray,
                       types: np.ndarray, target: int) -> np.ndarray:
    """d logit_target / d word-embedding output, float64: (N, T, D)."""
    double = __import__("copy").deepcopy(model).double()
    words = double.embed(torch.from_numpy(ids)).detach().requires_grad_(True)
    logits = double.head(words, torch.from_numpy(mask), torch.from_numpy(types))
    logits[:, target].sum().backward()
    return words.grad.numpy()
