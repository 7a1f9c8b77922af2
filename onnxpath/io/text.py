"""Text: token ids from `.npy`/`.npz`, or raw text (`.txt`, one example per line; `.jsonl`, a
`text` field; `--text`) tokenised with a Hugging Face `tokenizer.json` (the optional
`tokenizers` package: `pip install onnxpath[text]`). What is attributed is the embedding
output (see `wrt.py`); each token's score is its T×D map row reduced over D. Rendering: the
`tokens` field [{"token", "score"}], and coloured tokens on a terminal."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from onnxpath.errors import InputError, UsageError
from onnxpath.explanation import reduce_features, units_field
from onnxpath.intake.model import data_inputs, declared_shape
from onnxpath.io import Adapter, Example

PAD_TOKENS = ("[PAD]", "<pad>", "<PAD>", "[pad]")


def load_tokenizer(path: Path):
    try:
        from tokenizers import Tokenizer
    except ImportError as err:
        raise UsageError("--tokenizer needs the tokenizers package: pip install "
                         "'onnxpath[text]'") from err
    try:
        return Tokenizer.from_file(str(path))
    except Exception as err:  # the Rust side raises a plain Exception for bad files
        raise UsageError(f"cannot read --tokenizer {path}: {err}".splitlines()[0]) from err


def pad_id(tokenizer) -> int:
    """The pad token's id (its embedding is the default baseline), else 0."""
    if tokenizer is None:
        return 0
    padding = tokenizer.padding
    if padding and padding.get("pad_id") is not None:
        return int(padding["pad_id"])
    for token in PAD_TOKENS:
        found = tokenizer.token_to_id(token)
        if found is not None:
            return int(found)
    return 0


def read_texts(path: Path) -> list[tuple[str, str]]:
    """(name, text) pairs: a .txt's non-blank lines, or a .jsonl's `text` fields."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read {path} as UTF-8 text: {err}") from err
    texts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if path.suffix.lower() == ".jsonl":
            try:
                record = json.loads(line)
                text = record["text"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise InputError(f"{path}:{number}: a JSON object with a 'text' field was "
                                 "expected") from err
            if not isinstance(text, str):
                raise InputError(f"{path}:{number}: 'text' is not a string")
        else:
            text = line
        texts.append((f"{path}:{number}", text))
    if not texts:
        raise InputError(f"{path} holds no text")
    return texts


def input_roles(model) -> dict[str, str]:
    """Role (ids, mask, types) -> input name, from the names of the model's inputs."""
    roles = {}
    for value in data_inputs(model):
        lowered = value.name.lower()
        role = "mask" if "mask" in lowered else "types" if "type" in lowered \
            or "segment" in lowered else "ids"
        roles.setdefault(role, value.name)
    return roles


def sequence_length(model) -> int | None:
    shape = declared_shape(data_inputs(model)[0])
    return shape[1] if len(shape) > 1 and isinstance(shape[1], int) else None


def encode(tokenizer, text: str, model) -> tuple[dict[str, np.ndarray], list[str]]:
    """Named model inputs (batch of 1) and the tokens, padded or cut to a static length."""
    encoding = tokenizer.encode(text)
    ids, types = list(encoding.ids), list(encoding.type_ids)
    tokens, mask = list(encoding.tokens), list(encoding.attention_mask)
    length = sequence_length(model)
    if length is not None:
        pad, extra = pad_id(tokenizer), max(0, length - len(ids))
        ids, types = (ids + [pad] * extra)[:length], (types + [0] * extra)[:length]
        mask, tokens = (mask + [0] * extra)[:length], (tokens + ["[PAD]"] * extra)[:length]
    if not ids:
        raise InputError(f"the text {text[:40]!r} gives no tokens")
    roles = input_roles(model)
    values = {"ids": ids, "mask": mask, "types": types}
    feeds = {name: np.asarray([values[role]], dtype=np.int64) for role, name in roles.items()}
    return feeds, tokens


def read(path: Path | None, model, tokenizer, text: str | None = None,
         stem: str | None = None) -> list[Example]:
    """Examples from raw text (with a tokenizer) or token ids (.npy: ids; .npz: one array per
    input name), their output names from `stem` (default: the file's, or "text"): `stem`, or
    `stem.K` for a file of several texts."""
    if text is not None or (path is not None and path.suffix.lower() in (".txt", ".jsonl")):
        if tokenizer is None:
            raise UsageError("raw text needs --tokenizer tokenizer.json")
        pairs = [("--text", text)] if text is not None else read_texts(path)
        stem = stem or ("text" if path is None else path.stem)
        examples = []
        for i, (name, content) in enumerate(pairs):
            feeds, tokens = encode(tokenizer, content, model)
            examples.append(Example(name, f"{stem}.{i}" if len(pairs) > 1 else stem, feeds,
                                    "text", tokens=tokens, extra={"text": content}))
        return examples
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read {path}: {err}") from err
    feeds = dict(loaded) if path.suffix.lower() == ".npz" else {input_roles(model)["ids"]: loaded}
    feeds = {k: np.atleast_2d(v) for k, v in feeds.items()}
    ids = feeds.get(input_roles(model).get("ids"))
    tokens = None
    if ids is not None and ids.shape[0] == 1:
        tokens = [tokenizer.id_to_token(int(i)) or str(int(i)) if tokenizer else str(int(i))
                  for i in ids[0]]
    return [Example(str(path), stem or path.stem, feeds, "text", tokens=tokens)]


def tokens_field(tokens: list[str] | None, scores: np.ndarray) -> list[dict]:
    tokens = tokens or [str(i) for i in range(len(scores))]
    return [{"token": t, "score": float(s)} for t, s in zip(tokens, scores, strict=True)]


def token_colour(score: float, scale: float) -> tuple[int, int, int]:
    """White to red for positive scores, white to blue for negative, by |score| / scale."""
    level = int(200 * min(1.0, abs(float(score)) / scale))
    return (255, 255 - level, 255 - level) if score >= 0 else (255 - level, 255 - level, 255)


def ansi(tokens: list[str], scores: np.ndarray) -> str:
    """Tokens on coloured backgrounds (24-bit ANSI): red for positive scores, blue for
    negative, the strength proportional to |score| / max |score|."""
    scale = float(np.abs(scores).max()) or 1.0
    parts = []
    for token, score in zip(tokens, scores, strict=True):
        r, g, b = token_colour(score, scale)
        parts.append(f"\x1b[48;2;{r};{g};{b}m\x1b[38;2;0;0;0m{token}\x1b[0m")
    return " ".join(parts)


def picture(tokens: list[str], scores: np.ndarray, width: int = 720):
    """Tokens on coloured boxes, wrapped into lines, as a PNG-ready image (the ANSI colours)."""
    from PIL import Image, ImageDraw
    scale = float(np.abs(scores).max()) or 1.0
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    boxes, x, y, height = [], 8, 8, 22
    for token, score in zip(tokens, scores, strict=True):
        w = int(probe.textlength(token)) + 10
        if x + w > width - 8:
            x, y = 8, y + height + 6
        boxes.append((x, y, w, token, float(score)))
        x += w + 6
    image = Image.new("RGB", (width, y + height + 8), "white")
    draw = ImageDraw.Draw(image)
    for x, y, w, token, score in boxes:
        fill = token_colour(score, scale)
        draw.rectangle([x, y, x + w, y + height], fill=fill, outline=(200, 200, 200))
        draw.text((x + 5, y + 5), token, fill=(0, 0, 0))
    return image


def html(tokens: list[str], scores: np.ndarray) -> str:
    """The coloured tokens as an HTML fragment (inline styles: a self-contained report can
    embed it as is), each token's score in its title."""
    from html import escape
    scale = float(np.abs(scores).max()) or 1.0
    spans = []
    for token, score in zip(tokens, scores, strict=True):
        r, g, b = token_colour(score, scale)
        spans.append(f'<span title="{float(score):.4g}" style="background:rgb({r},{g},{b});'
                     f'padding:1px 3px;margin:1px;border-radius:3px">{escape(token)}</span>')
    return '<p class="onnxpath-tokens">' + " ".join(spans) + "</p>"


class TextAdapter(Adapter):
    """Token ids or raw text (a line, a .jsonl record or --text per example): the `tokens`
    field, a picture of coloured tokens and, on a terminal, coloured tokens on stderr."""

    kind = "text"
    splits = True

    def __init__(self, explainer, job):
        super().__init__(explainer, job)
        if job.tokenizer is not None:  # without one (a Ray worker), the driver's id is set
            explainer.pad_id = pad_id(job.tokenizer)

    def read(self, path: Path | None, stem: str) -> list[Example]:
        return read(path, self.explainer.proto, self.job.tokenizer,
                    self.job.text if path is None else None, stem)

    def options(self, example: Example) -> dict:
        return {} if example.tokens is None else {"tokens": [example.tokens]}

    def write(self, example: Example, raw: np.ndarray, base: str, title: str, record: dict,
              files) -> None:
        per_token = reduce_features(raw[None], self.job.token_reduce)[0]
        if example.tokens and len(per_token) != len(example.tokens):  # a layer's (--layer)
            record["units"] = units_field(per_token)
            return
        record["tokens"] = tokens_field(example.tokens, per_token)
        if files.out is not None and example.tokens:
            record["outputs"]["png"] = files.png(base, picture(example.tokens, per_token))
        if example.tokens and sys.stderr.isatty() and files.note is not None:
            files.note(f"{example.name} [{record['method']}] " + ansi(example.tokens, per_token))
