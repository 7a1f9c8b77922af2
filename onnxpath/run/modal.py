"""The `attribute` loop for tables, series and text (images go through `pipeline.py`).

Each input file becomes examples (`read`), each example is attributed with every method, and
each (example, method) gets one JSON line: the image fields (`input`, `method`, `target`,
`label`, `logit`, `prob`, `top`, `outputs`, `params`, `time_ms`, `error`, `extras`) plus `wrt`
and the modality's own field (`tokens` or `features`). With `--out`: the raw map as `.npy`, and
a CSV of scores (tables) or a line plot (series). A bad input is an error line; the rest go on.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onnxpath.errors import InputError, OnnxPathError, UsageError, unexpected
from onnxpath.explainer import Explainer
from onnxpath.explanation import reduce_features
from onnxpath.intake.model import data_inputs
from onnxpath.intake.wrt import FLOAT_TYPES, find_embedding
from onnxpath.io import Example, series, table, text
from onnxpath.io.inputs import output_stems
from onnxpath.io.outputs import Bundle, save_npy, save_png, write_atomic
from onnxpath.methods import METHODS, effective_params
from onnxpath.run.job import TOP, top_classes
from onnxpath.run.resume import RunState, job_fingerprint

TEXT_SUFFIXES = (".txt", ".jsonl")


@dataclass
class ModalJob:
    methods: Sequence[str] = ("gradient",)
    target: int | None = None
    top_k: int | None = None  # --target topK: each of the K best classes
    options: dict = field(default_factory=dict)
    labels: list[str] | None = None
    fallback: str | None = None
    out: Path | None = None
    tokenizer: object = None
    text: str | None = None
    feature_names: list[str] | None = None
    sample_rate: int | None = None
    token_reduce: str = "sum"
    resume: bool = True  # with `out`: skip examples a previous run of this job finished
    npz: Path | None = None  # every map also in one .npz


def is_text_model(explainer: Explainer) -> bool:
    """Token ids in, through an embedding lookup (or a --wrt inside the graph)."""
    dtype = explainer.input_dtype
    integer = dtype is not None and dtype not in FLOAT_TYPES
    return integer and (explainer.intake.wrt is not None
                        or find_embedding(explainer.proto) is not None)


def kind_of(explainer: Explainer, path: Path | None, job: ModalJob) -> str:
    """text, table or series, from the model and the file."""
    if is_text_model(explainer) or path is None or job.tokenizer is not None \
            or path.suffix.lower() in TEXT_SUFFIXES:
        return "text"
    shape = explainer.input_shape
    if path.suffix.lower() == ".wav" or len(shape) >= 3:
        return "series"
    if len(shape) == 2 and path.suffix.lower() == ".csv":
        columns = table.read_csv(path)[0]
        return "table" if len(columns) == shape[1] or not isinstance(shape[1], int) \
            else "series"
    long = isinstance(shape[-1], int) and shape[-1] > 256
    return "series" if long or job.sample_rate is not None else "table"


def read(explainer: Explainer, path: Path | None, job: ModalJob,
         stem: str | None = None) -> list[Example]:
    """The examples of one input file (None: --text), named after `stem`."""
    kind = kind_of(explainer, path, job)
    if kind == "text":
        return text.read(path, explainer.proto, job.tokenizer, job.text if path is None
                         else None, stem)
    if kind == "table":
        return table.read(path, explainer.input_shape[1], job.feature_names, stem)
    return series.read(path, explainer.input_shape[1:], job.sample_rate,
                       series.model_sample_rate(explainer.proto), stem)


class ModalRun:
    def __init__(self, explainer: Explainer, job: ModalJob, emit: Callable[[dict], None],
                 note: Callable[[str], None] | None = None, debug: bool = False):
        self.explainer, self.job, self.emit, self.debug = explainer, job, emit, debug
        self.note = note or (lambda line: print(line, file=sys.stderr, flush=True))
        self.failures = 0
        explainer.pad_id = text.pad_id(job.tokenizer)
        # Resume as for images, an example at a time: OUT/.onnxpath/done/<stem>.json
        self.state = (RunState(job.out, job_fingerprint(explainer.model_digest(), job))
                      if job.out is not None and job.resume else None)
        self.bundle: Bundle | None = None  # --npz, open while `run` runs

    def run(self, paths: Sequence[Path]) -> int:
        with self.bundled():
            for unit in self.units(paths):
                if not isinstance(unit, Example):
                    self.deliver(unit)  # an unreadable input's error records
                elif (done := self.finished(unit)) is not None:
                    self.deliver(done, from_files=True)
                else:
                    records = self.explain(unit)
                    self.mark(unit, records)
                    self.deliver(records)
        return self.failures

    @contextmanager
    def bundled(self):
        """--npz for the run: written whole at the end, also after an error or Ctrl-C (then
        with every finished map)."""
        self.bundle = Bundle(self.job.npz) if self.job.npz is not None else None
        try:
            yield
        finally:
            if self.bundle is not None:
                self.bundle.close()

    def finished(self, example: Example) -> list[dict] | None:
        """The records of an example a previous run of this job finished, if any."""
        return self.state.finished(example.name, example.stem) if self.state else None

    def mark(self, example: Example, records: list[dict]) -> None:
        if self.state is not None:
            self.state.mark(example.name, example.stem, records)

    def units(self, paths: Sequence[Path]) -> Iterator[Example | list[dict]]:
        """Each input's examples, in order; an input that cannot be read gives its error
        records instead (one per method)."""
        items: list[Path | None] = list(paths) + ([None] if self.job.text is not None else [])
        # One stem per input, unique in the run (a/x.csv and b/x.csv give a_x.row0 and
        # b_x.row0, never the same files), and with --out kept in the manifest, so adding
        # inputs never renames earlier results; --text is "text" unless a file took it.
        named = [Path("text") if p is None else p for p in items]
        stems = self.state.stems(named) if self.state else output_stems(named)
        for item, stem in zip(items, stems, strict=True):
            try:
                examples = read(self.explainer, item, self.job, stem)
            except Exception as err:  # InputError: its message; anything else is a bug
                if isinstance(err, UsageError):
                    raise
                message = self.failed(err) if isinstance(err, InputError) else \
                    self.failed(err, f"reading {item if item is not None else '--text'}")
                yield [self.record(str(item), method, message) for method in self.job.methods]
                continue
            yield from examples

    def deliver(self, records: list[dict], from_files: bool = False) -> None:
        """One example's (or unreadable input's) records: printed, and counted once as a
        failure if any of them is an error line. `from_files`: their maps are only under
        --out (a previous run or a worker wrote them), so --npz reads them back."""
        if from_files and self.bundle is not None:
            self.bundle.add_from_files(records)
        for record in records:
            self.emit(record)
        self.failures += any(record["error"] is not None for record in records)

    def failed(self, err: Exception, stage: str | None = None) -> str:
        """The error line's message; `stage` marks an unexpected exception (a bug)."""
        if self.debug:
            traceback.print_exception(err, file=sys.stderr)
        return str(err) if stage is None else unexpected(err, stage)

    def record(self, name: str, method: str, error: str | None = None) -> dict:
        return {"input": name, "method": method, "target": None, "label": None,
                "logit": None, "prob": None, "top": [], "outputs": {},
                "params": effective_params(METHODS[method], self.job.options),
                "time_ms": None, "error": error, "extras": {}, "wrt": None}

    def label(self, c: int) -> str | None:
        labels = self.job.labels
        return labels[c] if labels and 0 <= c < len(labels) else None

    def targets(self, example: Example) -> list[int | None]:
        """The classes to explain: --target, the K best (--target topK), or the prediction."""
        if not self.job.top_k:
            return [self.job.target]
        logits = self.explainer.predict(example.inputs)[0]
        return [int(c) for c in np.argsort(-logits, kind="stable")[:self.job.top_k]]

    def explain(self, example: Example) -> list[dict]:
        """The example's records, one per method and class; its files written."""
        records = []
        try:
            targets = self.targets(example)
        except InputError as err:
            targets = [None]
            failed_read = self.failed(err)
        else:
            failed_read = None
        for method in self.job.methods:
            for target in targets:
                records.append(self.explain_one(example, method, target, failed_read,
                                                len(targets) > 1))
        return records

    def explain_one(self, example: Example, method: str, target, error: str | None,
                    per_class: bool) -> dict:
        record = self.record(example.name, method, error)
        if error is None:
            try:
                explanation = self.explainer.attribute(
                    example.inputs, method, target, self.job.fallback,
                    tokens=[example.tokens] if example.tokens is not None else None,
                    **self.job.options)
                self.fill(record, example, explanation, per_class)
            except (InputError, OnnxPathError) as err:
                if isinstance(err, UsageError):
                    raise
                record["error"] = self.failed(err)
            except OSError as err:
                record["error"] = f"cannot write output: {err.strerror} ({err.filename})"
            except Exception as err:  # a bug: an error line for this input, not a traceback
                record["error"] = self.failed(err, f"running {method} on {example.name}")
        return record

    def fill(self, record: dict, example: Example, explanation, per_class: bool) -> None:
        raw = explanation.maps[0]
        scores = explanation.class_logits[0]
        c = int(explanation.targets[0])
        record.update(method=explanation.method, target=c, label=self.label(c),
                      wrt=explanation.wrt,
                      extras=explanation.extras[0], time_ms=round(explanation.time_ms, 2),
                      logit=float(explanation.logits[0]),
                      prob=None if len(scores) == 1 else float(explanation.probs[0]),
                      top=[{"class": k, "label": self.label(k), "logit": logit,
                            "prob": None if len(scores) == 1 else prob}
                           for k, logit, prob in top_classes(scores, TOP)])
        if not (np.isfinite(raw).all() and np.isfinite(scores).all()):
            record["error"] = f"the attribution holds NaN or Inf for {example.name}"
            return
        base = f"{example.stem}.{explanation.method}" + (f".class{c}" if per_class else "")
        out, outputs = self.job.out, record["outputs"]
        if out is not None:
            outputs["npy"] = str(save_npy(out / f"{base}.npy", raw))
        if self.bundle is not None:
            outputs["npz"], outputs["npz_key"] = str(self.bundle.path), self.bundle.add(base, raw)
        if example.kind == "text":
            per_token = reduce_features(raw[None], self.job.token_reduce)[0]
            record["tokens"] = text.tokens_field(example.tokens, per_token)
            if out is not None and example.tokens:
                outputs["png"] = str(save_png(out / f"{base}.png",
                                              text.picture(example.tokens, per_token)))
            if example.tokens and sys.stderr.isatty():
                self.note(f"{example.name} [{explanation.method}] "
                          + text.ansi(example.tokens, per_token))
        elif example.kind == "table":
            record["features"] = table.features_field(example.feature_names, example.values,
                                                      raw)
            if out is not None:
                data = table.scores_csv(example.feature_names, example.values, raw)
                outputs["csv"] = str(write_atomic(out / f"{base}.csv", data))
                outputs["png"] = str(save_png(out / f"{base}.png",
                                              table.bars(example.feature_names, raw)))
        else:
            per_step = raw.reshape(-1, raw.shape[-1]).sum(axis=0)
            record["series"] = series.series_field(example.values, raw)
            if out is not None:
                outputs["png"] = str(save_png(out / f"{base}.png",
                                              series.plot(example.values, per_step)))


def uses_modal_loop(explainer: Explainer, paths: Sequence[Path], text_given: bool) -> bool:
    """Whether `attribute` takes this loop: text, several inputs, or a model whose input is
    not an image batch (N×C×H×W), or inputs that only this loop reads."""
    if text_given or is_text_model(explainer):
        return True
    if len(explainer.input_shape) == 4:  # an image model: a .txt among images is a bad image
        return False
    if any(p.suffix.lower() in (".csv", ".wav", ".txt", ".jsonl") for p in paths):
        return True
    float_input = explainer.input_dtype in FLOAT_TYPES
    return float_input and len(explainer.input_shape) in (2, 3) \
        and len(data_inputs(explainer.proto)) == 1


def cli_run(explainer: Explainer, paths: Sequence[Path], methods, target, options, labels,
            fallback, out, text_value, tokenizer_path, features_path, sample_rate,
            token_reduce, debug: bool, quiet: bool, top_k: int | None = None,
            also: Callable[[dict], None] | None = None, ray: dict | None = None,
            resume: bool = True, npz: Path | None = None) -> int:
    """`onnxpath attribute` for tables, series and text: exit status 0 or 1. `also` sees
    every record after it is printed (the --report page). `ray`: run on Ray, with these
    arguments of `run_ray_modal` (model, cluster, device, threads, cache, provider_options)."""
    from onnxpath.cli._common import emit
    if not paths and text_value is None:
        raise UsageError("no inputs found (give files, folders, globs, - or --text)")
    if token_reduce not in ("sum", "abs-sum", "l2"):
        raise UsageError(f"--token-reduce takes sum, abs-sum or l2, got '{token_reduce}'")
    tokenizer = text.load_tokenizer(tokenizer_path) if tokenizer_path is not None else None
    names = table.read_names(features_path) if features_path is not None else None
    job = ModalJob(methods, target, top_k, options, labels, fallback, out, tokenizer,
                   text_value, names, sample_rate, token_reduce, resume, npz)
    stdout = sys.stdout  # bound now: Ray's run sends sys.stdout to stderr

    def sink(record: dict) -> None:
        emit(record, stdout)
        if also is not None:
            also(record)

    if ray is not None:
        from onnxpath.run.ray_modal import run_ray_modal
        failures = run_ray_modal(paths=paths, job=job, explainer=explainer, emit=sink,
                                 debug=debug, **ray)
    else:
        failures = ModalRun(explainer, job, sink, debug=debug).run(paths)
    return 1 if failures else 0
