"""The batch loop behind `onnxpath attribute`, usable from Python as well.

Inputs go through in chunks of `batch_size`: each chunk is read and preprocessed, stacked by
shape, attributed with one call per method (one ONNX Runtime run per chunk, or per chunk of
rows for methods that evaluate many copies), then written and reported input by input, in the
order given. A bad input becomes an error record and the batch goes on; an error that concerns
the whole run (the model, the options, the device) propagates. Each result file is written
atomically, and each input's records are emitted right after its files, so an interrupted run
keeps every finished result and no partial file. With --out, each finished input also gets a
completion marker under OUT/.onnxpath/ (see resume.py), so a rerun redoes only the rest.
"""

from __future__ import annotations

import sys
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from onnxpath import errors
from onnxpath.errors import InputError, OnnxPathError, UsageError, unexpected
from onnxpath.explainer import Explainer
from onnxpath.explanation import Explanation
from onnxpath.io.image import load_input
from onnxpath.io.inputs import output_stems
from onnxpath.io.outputs import Bundle, save_npy, save_png
from onnxpath.io.render import overlay, reduce_channels, side_by_side
from onnxpath.io.storage import as_location
from onnxpath.io.tensors import load_npz
from onnxpath.methods import METHODS, effective_params
from onnxpath.run.job import TOP, Job, top_classes
from onnxpath.run.progress import Progress
from onnxpath.run.resume import RunState, job_fingerprint


def chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), max(1, size)):
        yield items[start:start + max(1, size)]


class Pipeline:
    """Runs a Job over paths; `emit(record)` receives each result record as it completes."""

    def __init__(self, explainer: Explainer, job: Job, emit: Callable[[dict], None],
                 progress: Progress | None = None, note: Callable[[str], None] | None = None,
                 debug: bool = False):
        unknown = [m for m in job.methods if m not in METHODS]
        if unknown or not job.methods:
            raise UsageError(f"unknown method '{','.join(unknown)}'; choose from "
                             f"{', '.join(METHODS)}")
        if job.side_by_side and job.out is None:
            raise UsageError("--side-by-side writes a figure: give --out DIR")
        if job.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {job.batch_size}")
        self.explainer = explainer
        self.job = job
        self.emit = emit
        self.progress = progress
        self.note = note or (lambda text: print(text, file=sys.stderr, flush=True))
        self.debug = debug  # tracebacks of input errors on stderr
        self.failures = 0
        self._noted: set[str] = set()
        self._inputs: set[Path] = set()
        self._bundle: Bundle | None = None
        # Called with (record, overlay image) before the record is emitted, when there is no
        # --out to write the overlay to (the HTML report's pictures).
        self.overlay_hook: Callable[[dict, object], None] | None = None
        self._state: RunState | None = None
        self._items: list[tuple[Path, str]] = []
        self._finished: dict[int, list[dict]] = {}
        self._next = 0

    def run(self, paths: Sequence[Path], stems: Sequence[str] | None = None) -> int:
        """Process every path; returns how many records carry an error.

        Records come out in input order; those of inputs a previous run finished (resume) are
        re-emitted in their place, without reading the input again.
        """
        paths = [as_location(p) for p in paths]
        self._inputs = {p.resolve() for p in paths}
        self._bundle = Bundle(self.job.npz) if self.job.npz is not None else None
        self._state = (RunState(self.job.out, job_fingerprint(self.explainer.model_digest(),
                                                              self.job))
                       if self.job.out is not None and self.job.resume else None)
        if stems is None:
            stems = self._state.stems(paths) if self._state else output_stems(paths)
        self._items = list(zip(paths, stems, strict=True))
        self._finished = {k: records for k, (path, stem) in enumerate(self._items)
                          if self._state and (records := self._state.finished(path, stem))}
        self._next = 0  # the first input whose records are not out yet
        try:
            self.execute([k for k in range(len(self._items)) if k not in self._finished])
            self.replay_until(len(self._items))
        finally:
            if self.progress is not None:
                self.progress.clear()
            if self._bundle is not None:
                self._bundle.close()
        return self.failures

    def execute(self, todo: list[int]) -> None:
        """Compute the inputs at positions `todo`, handing each one's records to `completed`
        in order. One helper thread reads the next chunk and writes the previous one while ONNX
        Runtime works on the current one (decoding, PNG encoding and file writes release the
        GIL): in a batch, a ResNet-50 gradient then costs about what a warm in-process call
        costs. Tasks run in order on that one thread, so records come out in input order."""
        work = list(chunks(todo, self.job.batch_size))
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnxpath-io")
        loading: Future | None = pool.submit(self.load, self.picked(work[0])) if work else None
        writing: deque[Future] = deque()
        try:
            for k, chunk in enumerate(work):
                loaded, problems = loading.result()
                loading = (pool.submit(self.load, self.picked(work[k + 1]))
                           if k + 1 < len(work) else None)
                results = self.compute(len(chunk), loaded)
                writing.append(pool.submit(self.finish_chunk, chunk, loaded, problems, results))
                while writing and writing[0].done():
                    writing.popleft().result()  # surfaces a run-level error early
            while writing:
                writing.popleft().result()
        except BaseException:
            # Ctrl-C or a run-level error: read nothing more, but let the chunks already
            # computed be written and reported (each file is atomic either way).
            if loading is not None:
                loading.cancel()
            raise
        finally:
            pool.shutdown(wait=True)

    def picked(self, positions: Sequence[int]) -> list[tuple[Path, str]]:
        return [self._items[k] for k in positions]

    def completed(self, position: int, records: list[dict]) -> None:
        """One input is done and its files are written: mark it (last), then report it."""
        self.mark(position, records)
        self.deliver(position, records)

    def mark(self, position: int, records: list[dict]) -> None:
        if self._state is not None:
            path, stem = self._items[position]
            self._state.mark(path, stem, records)

    def deliver(self, position: int, records: list[dict], from_files: bool = False) -> None:
        """Report an input's records, after any earlier inputs a previous run finished; in
        increasing `position` order. `from_files`: its maps are only on disk (another process
        wrote them), so the --npz bundle reads them back."""
        self.replay_until(position)
        if from_files:
            self.bundle_from_files(records)
        self.report(records)
        self._next = max(self._next, position + 1)

    def replay_until(self, position: int) -> None:
        """Re-emit the records of finished inputs before `position` not yet reported."""
        while self._next < position:
            records = self._finished.get(self._next)
            self._next += 1
            if records is not None:
                self.bundle_from_files(records)
                self.report(records)

    def report(self, records: list[dict]) -> None:
        failed = sum(r["error"] is not None for r in records)
        self.failures += failed
        for record in records:
            self.emit(record)
        if self.progress is not None:
            self.progress.advance(1, failed=int(failed > 0))

    def bundle_from_files(self, records: list[dict]) -> None:
        """--npz with maps this process did not compute: read them back from --out."""
        if self._bundle is not None:
            self._bundle.add_from_files(records)

    # --- one chunk -------------------------------------------------------------------------

    def load(self, chunk: Sequence[tuple[Path, str]]) -> tuple[dict, dict]:
        """({index: (tensor, image or None)}, {index: error message})."""
        loaded: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        problems: dict[int, str] = {}
        for i, (path, _) in enumerate(chunk):
            try:
                if str(path).lower().endswith(".npz"):
                    loaded[i] = load_npz(path, self.explainer.inputs), None
                else:
                    loaded[i] = load_input(path, self.explainer.input_shape, self.job.prep)
            except InputError as err:
                problems[i] = self.failed(err)
            except Exception as err:  # a bug: one error line for this input, not a traceback
                problems[i] = self.failed(err, f"reading {path}")
        return loaded, problems

    def compute(self, size: int, loaded: dict) -> dict[int, dict[str, object]]:
        """Per input and method: (Explanation, rows) or an error message."""
        results: dict[int, dict[str, object]] = {i: {} for i in range(size)}
        groups: dict[tuple, list[int]] = {}
        for i, (x, _) in loaded.items():
            groups.setdefault(shape_key(x), []).append(i)
        for members in groups.values():
            x = stack([loaded[i][0] for i in members])
            for asked in self.job.methods:
                for i, result in zip(members, self.attribute(x, asked), strict=True):
                    results[i][asked] = result
        return results

    def finish_chunk(self, chunk: Sequence[int], loaded: dict, problems: dict,
                     results: dict) -> None:
        for i, position in enumerate(chunk):
            path, stem = self._items[position]
            image = loaded[i][1] if i in loaded else None
            self.completed(position, self.finish(path, stem, image, problems.get(i),
                                                 results[i]))

    def attribute(self, x: np.ndarray, asked: str) -> list:
        """Per example: (Explanation, rows) or an error message. A chunk whose call fails for
        one input is retried input by input, so the error lands on the right one."""
        try:
            explanation, rows = self._attribute(x, asked)
            return [(explanation, rows[i]) for i in range(rows_of(x))]
        except InputError as err:
            if rows_of(x) == 1:
                return [self.failed(err)]
        except OnnxPathError:
            raise  # the model, the options or the device: nothing more can be processed
        except Exception as err:  # a bug: an error line for the input, not a traceback
            if rows_of(x) == 1:
                return [self.failed(err, errors.STAGE[-1] if errors.STAGE else
                                    f"running {asked}")]
        return [self.attribute(take(x, slice(i, i + 1)), asked)[0] for i in range(rows_of(x))]

    def _attribute(self, x: np.ndarray, asked: str) -> tuple[Explanation, list[list[int]]]:
        job = self.job
        if job.top_k:
            logits = self.explainer.predict(x)
            k = min(job.top_k, logits.shape[1])
            order = np.argsort(-logits, axis=1, kind="stable")[:, :k]
            explanation = self.explainer.attribute(
                repeat_rows(x, k), method=asked, target=order.ravel(),
                fallback=job.fallback, **job.options)
            return explanation, [list(range(i * k, (i + 1) * k)) for i in range(rows_of(x))]
        explanation = self.explainer.attribute(x, method=asked, target=job.target,
                                               fallback=job.fallback, **job.options)
        return explanation, [[i] for i in range(rows_of(x))]

    def failed(self, err: Exception, stage: str | None = None) -> str:
        """The error line's message; `stage` marks an unexpected exception (a bug)."""
        if self.debug:
            traceback.print_exception(err, file=sys.stderr)
        return str(err) if stage is None else unexpected(err, stage)

    # --- one input -------------------------------------------------------------------------

    def finish(self, path: Path, stem: str, image: np.ndarray | None, problem: str | None,
               results: dict[str, object]) -> list[dict]:
        records, panels = [], []
        for asked in self.job.methods:
            outcome = results.get(asked, problem)
            if isinstance(outcome, tuple):
                explanation, rows = outcome
                for row in rows:
                    records.append(self.write(path, stem, image, asked, explanation, row,
                                              len(rows) > 1, panels))
            else:
                records.append(self.record(path, asked, error=outcome or "not processed"))
        if self.job.side_by_side and panels:
            try:
                figure = save_png(self.job.out / f"{stem}.side-by-side.png",
                                  side_by_side(image, panels, **self.job.style.overlay_args()))
                for record in records:
                    if record["error"] is None:
                        record["outputs"]["side_by_side"] = str(figure)
            except OSError as err:
                records[-1]["error"] = cannot_write(err)
        return records

    def record(self, path: Path, method: str, error: str | None = None) -> dict:
        return {"input": str(path), "method": method, "target": None, "label": None,
                "logit": None, "prob": None, "wrt": None, "top": [], "outputs": {},
                "params": effective_params(METHODS[method], self.job.options),
                "time_ms": None, "error": error, "extras": {}}

    def label(self, c: int) -> str | None:
        labels = self.job.labels
        return labels[c] if labels and 0 <= c < len(labels) else None

    def write(self, path: Path, stem: str, image, asked: str, explanation: Explanation,
              row: int, per_class: bool, panels: list) -> dict:
        name = explanation.method
        record = self.record(path, name)
        if name != asked and asked not in self._noted:
            self._noted.add(asked)
            self.note(f"onnxpath: note: {asked} falls back to {name}: "
                      f"{explanation.extras[row].get('fallback_reason', '')}")
        raw = explanation.maps[row]
        scores = explanation.class_logits[row]
        c = int(explanation.targets[row])
        record.update(target=c, label=self.label(c), extras=explanation.extras[row],
                      time_ms=round(explanation.time_ms / len(explanation.maps), 2))
        if not (np.isfinite(raw).all() and np.isfinite(scores).all()):
            where = "the model's output" if not np.isfinite(scores).all() else "the attribution"
            record["error"] = f"{where} holds NaN or Inf for {path}; nothing written"
            return record
        prob = float(explanation.probs[row])
        record.update(logit=float(explanation.logits[row]), wrt=explanation.wrt,
                      prob=None if np.isnan(prob) else prob,
                      top=[{"class": k, "label": self.label(k), "logit": logit,
                            "prob": prob if explanation.kind == "classes" else None}
                           for k, logit, prob in top_classes(scores, TOP,
                                                             explanation.probabilities)])
        base = f"{stem}.{name}" + (f".class{c}" if per_class else "")
        try:
            self.save(record, base, raw, image, panels,
                      f"{asked if name == asked else f'{name} (for {asked})'}"
                      + (f" {self.label(c) or c}" if per_class else ""))
        except OSError as err:
            record["error"] = cannot_write(self.failed(err) and err)
        except InputError as err:
            record["error"] = self.failed(err)
        except Exception as err:  # a bug: an error line for this input, not a traceback
            record["error"] = self.failed(err, f"writing the results of {path}")
        return record

    def save(self, record: dict, base: str, raw: np.ndarray, image, panels: list,
             title: str) -> None:
        job, outputs = self.job, record["outputs"]
        if job.out is not None:
            outputs["npy"] = str(save_npy(self.target_path(job.out / f"{base}.npy"), raw))
            if raw.ndim >= 2:
                heat = reduce_channels(channels_first(raw, job.prep.layout), job.style.reduce)
                panels.append((title, heat))
                if image is not None:
                    png = overlay(image, heat, **job.style.overlay_args())
                    outputs["png"] = str(save_png(self.target_path(job.out / f"{base}.png"),
                                                  png))
        if self._bundle is not None:
            outputs["npz"] = str(self._bundle.path)
            outputs["npz_key"] = self._bundle.add(base, raw)
        if self.overlay_hook is not None and job.out is None and image is not None \
                and raw.ndim >= 2:  # no --out: the overlay goes to the hook (a report) only
            heat = reduce_channels(channels_first(raw, job.prep.layout), job.style.reduce)
            self.overlay_hook(record, overlay(image, heat, **job.style.overlay_args()))

    def target_path(self, path: Path) -> Path:
        """Inputs are never overwritten, whatever --out and their names are."""
        if path.resolve() in self._inputs:
            raise InputError(f"refusing to overwrite the input {path}; choose another --out")
        return path


def channels_first(raw: np.ndarray, layout: str) -> np.ndarray:
    return np.moveaxis(raw, -1, 0) if layout == "nhwc" and raw.ndim == 3 else raw


def shape_key(x) -> tuple:
    """Inputs that stack together: same shape, or the same shapes by input name (.npz)."""
    return tuple(sorted((k, v.shape) for k, v in x.items())) if isinstance(x, dict) else x.shape


def stack(examples: list):
    if isinstance(examples[0], dict):
        return {k: np.stack([e[k] for e in examples]) for k in examples[0]}
    return np.stack(examples)


def rows_of(x) -> int:
    return len(next(iter(x.values()))) if isinstance(x, dict) else len(x)


def take(x, rows: slice):
    return {k: v[rows] for k, v in x.items()} if isinstance(x, dict) else x[rows]


def repeat_rows(x, k: int):
    if isinstance(x, dict):
        return {name: np.repeat(v, k, axis=0) for name, v in x.items()}
    return np.repeat(x, k, axis=0)


def cannot_write(err: OSError) -> str:
    return f"cannot write output: {err.strerror or type(err).__name__} ({err.filename})"


def run(explainer: Explainer, paths: Sequence[Path], job: Job,
        emit: Callable[[dict], None]) -> int:
    """Library entry point: process `paths`, hand each record to `emit`; returns failures."""
    if job.out is not None:
        from onnxpath.io.outputs import check_writable
        check_writable(job.out)
    return Pipeline(explainer, job, emit).run(paths)


