"""Which adapter reads an input: the model decides first (an image batch N×C×H×W, token ids
through an embedding), then the file (.csv, .wav, .txt, .jsonl) and the options (a tokenizer,
a sample rate)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from onnxpath.intake.model import data_inputs
from onnxpath.intake.wrt import FLOAT_TYPES, find_embedding
from onnxpath.io import Adapter
from onnxpath.io.image import ImageAdapter
from onnxpath.io.series import SeriesAdapter
from onnxpath.io.table import TableAdapter, read_csv
from onnxpath.io.text import TextAdapter

ADAPTERS: dict[str, type[Adapter]] = {adapter.kind: adapter for adapter in (
    ImageAdapter, TableAdapter, SeriesAdapter, TextAdapter)}
TEXT_SUFFIXES = (".txt", ".jsonl")
NOT_IMAGE_SUFFIXES = (".csv", ".wav", ".txt", ".jsonl")


def is_text_model(explainer) -> bool:
    """Token ids in, through an embedding lookup (or a --wrt inside the graph)."""
    dtype = explainer.input_dtype
    integer = dtype is not None and dtype not in FLOAT_TYPES
    return integer and (explainer.intake.wrt is not None
                        or find_embedding(explainer.proto) is not None)


def takes_images(explainer, paths: Sequence[Path], text_given: bool) -> bool:
    """Whether a run is an image run: not text, and either an image batch (N×C×H×W, where a
    .txt among images is a bad image) or inputs only images can be."""
    if text_given or is_text_model(explainer):
        return False
    if len(explainer.input_shape) == 4:
        return True
    if any(p.suffix.lower() in NOT_IMAGE_SUFFIXES for p in paths):
        return False
    float_input = explainer.input_dtype in FLOAT_TYPES
    return not (float_input and len(explainer.input_shape) in (2, 3)
                and len(data_inputs(explainer.proto)) == 1)


def kind_of(explainer, path: Path | None, job) -> str:
    """text, table or series, for one input of a run that is not an image run."""
    if is_text_model(explainer) or path is None or job.tokenizer is not None \
            or path.suffix.lower() in TEXT_SUFFIXES:
        return "text"
    shape = explainer.input_shape
    if path.suffix.lower() == ".wav" or len(shape) >= 3:
        return "series"
    if len(shape) == 2 and path.suffix.lower() == ".csv":
        columns = read_csv(path)[0]
        return "table" if len(columns) == shape[1] or not isinstance(shape[1], int) \
            else "series"
    long = isinstance(shape[-1], int) and shape[-1] > 256
    return "series" if long or job.sample_rate is not None else "table"


class Modalities:
    """The adapters of one run, made once each."""

    def __init__(self, explainer, job, images: bool):
        self.explainer, self.job, self.images = explainer, job, images
        self.made: dict[str, Adapter] = {}

    def of_kind(self, kind: str) -> Adapter:
        if kind not in self.made:
            self.made[kind] = ADAPTERS[kind](self.explainer, self.job)
        return self.made[kind]

    def for_input(self, path: Path | None) -> Adapter:
        return self.of_kind("image" if self.images else kind_of(self.explainer, path, self.job))
