"""The one run loop behind `onnxpath attribute`, for every modality, usable from Python as well.

The loop plans the run's units in input order: an input file still to read, an example (a CSV
row, a line of text), or records already known (an input a previous run finished, an input
that cannot be read). Units go through in chunks of `batch_size` examples: each chunk is read,
its examples are explained (stacked by shape into one ONNX Runtime call per method where the
modality allows it, see `onnxpath.io.Adapter`), their files are written and their records
emitted, in the order given. One helper thread reads the next chunk and writes the previous
one while ONNX Runtime works on the current one.

A bad input becomes an error record and the run goes on; an error that concerns the whole run
(the model, the options, the device) propagates. Each result file is written atomically, and
each example's records are emitted right after its files, so an interrupted run keeps every
finished result and no partial file. With --out, each finished example also gets a completion
marker under OUT/.onnxpath/ (see resume.py), so a rerun redoes only the rest.
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
from onnxpath.io import Example
from onnxpath.io.inputs import output_stems
from onnxpath.io.modality import Modalities, takes_images
from onnxpath.io.outputs import Bundle, ResultFiles, cannot_write, check_writable
from onnxpath.io.storage import as_location
from onnxpath.methods import METHODS
from onnxpath.run.job import Job
from onnxpath.run.progress import Progress
from onnxpath.run.records import (
    Outcome,
    Unit,
    best_classes,
    blank_record,
    describe,
    emit_json,
    in_chunks,
    repeat_rows,
    rows_of,
    shape_key,
    stack,
    take,
)
from onnxpath.run.resume import RunState, job_fingerprint


class RunLoop:
    """Runs a Job over input files; `emit(record)` receives each record as it completes.
    `report` (optional) gets `add(record)` after each emit, and `overlay(record, picture)` for
    pictures that have no --out to go to. `progress`: draw a progress bar for image runs
    (None: when stderr is a terminal)."""

    def __init__(self, explainer: Explainer, job: Job, emit: Callable[[dict], None],
                 report=None, progress: bool | None = False, debug: bool = False):
        unknown = [m for m in job.methods if m not in METHODS]
        if unknown or not job.methods:
            raise UsageError(f"unknown method '{','.join(unknown)}'; choose from "
                             f"{', '.join(METHODS)}")
        if job.side_by_side and job.out is None:
            raise UsageError("--side-by-side writes a figure: give --out DIR")
        if job.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {job.batch_size}")
        self.explainer, self.job, self.emit, self.report = explainer, job, emit, report
        self.show_progress, self.debug = progress, debug
        self.progress: Progress | None = None
        self.failures = 0
        self.delivered = 0  # examples handed on
        self.modalities: Modalities | None = None
        self.state: RunState | None = None
        self.files = ResultFiles(None)
        self._noted: set[str] = set()

    def note(self, text: str) -> None:
        """A line for the user on stderr (above the progress bar)."""
        if self.progress is not None:
            self.progress.note(text)
        else:
            print(text, file=sys.stderr, flush=True)

    # --- the run ---------------------------------------------------------------------------

    def run(self, paths: Sequence[Path]) -> int:
        """Process every path (and --text); returns how many examples failed (then also said
        on stderr, in one line). Records come out in input order; those of examples a previous
        run finished are re-emitted in their place, without reading their input again where it
        holds one example."""
        job = self.job
        paths = [as_location(p) for p in paths]
        images = takes_images(self.explainer, paths, job.text is not None
                              or job.tokenizer is not None)
        self.modalities = Modalities(self.explainer, job, images)
        if job.out is not None and job.resume:
            self.state = RunState(job.out, job_fingerprint(
                self.explainer.model_digest(), job, images, self.explainer.intake_options()))
        if images and self.show_progress is not False:
            self.progress = Progress(len(paths), enabled=self.show_progress)
        failures = self.run_units(self.plan(paths), paths)
        if failures:  # also when stdout is a file and no progress bar showed the count
            self.note(f"onnxpath: {failures} of {self.delivered} inputs failed")
        return failures

    def run_units(self, units: Iterator[Unit], inputs: Sequence[Path]) -> int:
        bundle = Bundle(self.job.npz) if self.job.npz is not None else None
        self.files = ResultFiles(self.job.out, {p.resolve() for p in inputs}, bundle,
                                 show=self.report.overlay if self.report is not None else None,
                                 note=self.note)
        try:
            self.execute(units)
        finally:
            if self.progress is not None:
                self.progress.clear()
            if bundle is not None:
                bundle.close()
        return self.failures

    def plan(self, paths: Sequence[Path]) -> Iterator[Unit]:
        """The run's units in order. A file that holds one example is left to the reader
        (a finished one is not read at all); a file of several is read now, into examples."""
        items: list[Path | None] = list(paths) + ([None] if self.job.text is not None else [])
        # One stem per input, unique in the run (a/x.csv and b/x.csv never write the same
        # files), and with --out kept in the manifest, so adding inputs never renames earlier
        # results; --text is "text" unless a file took it.
        named = [Path("text") if p is None else p for p in items]
        stems = self.state.stems(named) if self.state else output_stems(named)
        for position, (item, stem) in enumerate(zip(items, stems, strict=True)):
            name = str(item) if item is not None else "--text"
            # The input as it is before it is read: its marker must not vouch for other content
            source = self.state.source(item) if self.state is not None else None
            try:
                adapter = self.modalities.for_input(item)  # may look into the file
                if not adapter.splits:
                    yield Unit(name, stem, adapter, path=item, records=self.finished(
                        name, stem, source), from_files=True, position=position, source=source)
                    continue
                if source is not None:
                    source.digest()  # before the file is read: what its results come from
                examples = adapter.read(item, stem)
            except UsageError:
                raise
            except Exception as err:  # InputError: its message; anything else is a bug
                message = self.failed(err) if isinstance(err, InputError) else \
                    self.failed(err, f"reading {name}")
                yield Unit(name, stem, None, position=position,
                           records=[self.record(name, m, message) for m in self.job.methods])
                continue
            for example in examples:
                done = self.finished(example.name, example.stem, source)
                yield Unit(example.name, example.stem, adapter, example=example, records=done,
                           from_files=True, position=position, source=source)

    def finished(self, name: str, stem: str, source=None) -> list[dict] | None:
        """The records of an example a previous run of this job finished from the same input
        content (`source`, see resume.Source), if any."""
        return self.state.finished(name, stem, source) if self.state else None

    def execute(self, units: Iterator[Unit]) -> None:
        """Read, explain and write the units in chunks, handing each one's records on in order.
        Reading the next chunk and writing the previous one share one helper thread (decoding,
        PNG encoding and file writes release the GIL), so in a batch a ResNet-50 gradient
        costs about what a warm in-process call costs. Tasks run in order on that thread, so
        records come out in input order."""
        chunks = in_chunks(units, self.job.batch_size)
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnxpath-io")
        loading: Future = pool.submit(self.read_next, chunks)
        writing: deque[Future] = deque()
        try:
            while (chunk := loading.result()) is not None:
                loading = pool.submit(self.read_next, chunks)
                self.explain(chunk)
                writing.append(pool.submit(self.finish, chunk))
                while writing and writing[0].done():
                    writing.popleft().result()  # surfaces a run-level error early
            while writing:
                writing.popleft().result()
        except BaseException:
            # Ctrl-C or a run-level error: read nothing more, but let the chunks already
            # explained be written and reported (each file is atomic either way).
            loading.cancel()
            raise
        finally:
            pool.shutdown(wait=True)

    def read_next(self, chunks: Iterator[list[Unit]]) -> list[Unit] | None:
        chunk = next(chunks, None)
        for unit in chunk or []:
            if unit.records is None and unit.example is None:
                self.read(unit)
        return chunk

    def read(self, unit: Unit) -> None:
        try:
            unit.example = unit.adapter.read(unit.path, unit.stem)[0]
        except UsageError:
            raise
        except InputError as err:
            unit.problem = self.failed(err)
        except Exception as err:  # a bug: one error line for this input, not a traceback
            unit.problem = self.failed(err, f"reading {unit.name}")

    # --- explaining ------------------------------------------------------------------------

    def explain(self, chunk: list[Unit]) -> None:
        """Fill each unit's `outcomes`: stackable examples of one shape together, one call per
        method; the others one by one."""
        groups: dict[tuple, list[Unit]] = {}
        for unit in chunk:
            if unit.records is None and unit.example is not None:
                key = (unit.adapter.kind, shape_key(unit.example.inputs)) \
                    if unit.adapter.stackable else (id(unit),)
                groups.setdefault(key, []).append(unit)
        for members in groups.values():
            if members[0].adapter.stackable:
                x = stack([unit.example.inputs for unit in members])
                for asked in self.job.methods:
                    for unit, outcome in zip(members, self.attribute(x, asked), strict=True):
                        unit.outcomes[asked] = outcome
            else:
                self.explain_alone(members[0])

    def attribute(self, x, asked: str) -> list[Outcome]:
        """Per example of the stack. A call that fails for one example is retried example by
        example, so the error lands on the right one."""
        try:
            return self._attribute(x, asked)
        except InputError as err:
            if rows_of(x) == 1:
                return [[self.failed(err)]]
        except OnnxPathError:
            raise  # the model, the options or the device: nothing more can be processed
        except Exception as err:  # a bug: an error line for the example, not a traceback
            if rows_of(x) == 1:
                return [[self.failed(err, errors.STAGE[-1] if errors.STAGE else
                                     f"running {asked}")]]
        return [self.attribute(take(x, slice(i, i + 1)), asked)[0] for i in range(rows_of(x))]

    def _attribute(self, x, asked: str) -> list[Outcome]:
        job, n = self.job, rows_of(x)
        if job.top_k:
            k = job.top_k
            order = best_classes(self.explainer.predict(x), k)
            explanation = self.explainer.attribute(
                repeat_rows(x, k), method=asked, target=order.ravel(), fallback=job.fallback,
                **job.options)
            return [[(explanation, row) for row in range(i * k, (i + 1) * k)] for i in range(n)]
        explanation = self.explainer.attribute(x, method=asked, target=job.target,
                                               fallback=job.fallback, **job.options)
        return [[(explanation, i)] for i in range(n)]

    def explain_alone(self, unit: Unit) -> None:
        """One example, one call per method and class. An example the model or a method
        cannot take is an error line for that example only."""
        example, job = unit.example, self.job
        try:
            targets = self.targets(example)
        except InputError as err:
            unit.outcomes = {asked: [self.failed(err)] for asked in job.methods}
            return
        options = {**unit.adapter.options(example), **job.options}
        for asked in job.methods:
            outcome: Outcome = []
            for target in targets:
                try:
                    explanation = self.explainer.attribute(example.inputs, asked, target,
                                                           job.fallback, **options)
                    outcome.append((explanation, 0))
                except UsageError:
                    raise
                except (InputError, OnnxPathError) as err:
                    outcome.append(self.failed(err))
                except Exception as err:  # a bug: an error line for this example
                    outcome.append(self.failed(err, f"running {asked} on {example.name}"))
            unit.outcomes[asked] = outcome

    def targets(self, example: Example) -> list[int | None]:
        """The classes to explain: --target, the K best (--target topK), or the prediction."""
        if not self.job.top_k:
            return [self.job.target]
        logits = self.explainer.predict(example.inputs)[:1]
        return [int(c) for c in best_classes(logits, self.job.top_k)[0]]

    def failed(self, err: Exception, stage: str | None = None) -> str:
        """The error line's message; `stage` marks an unexpected exception (a bug)."""
        if self.debug:
            traceback.print_exception(err, file=sys.stderr)
        return str(err) if stage is None else unexpected(err, stage)

    # --- writing and reporting -------------------------------------------------------------

    def finish(self, chunk: list[Unit]) -> None:
        for unit in chunk:
            if unit.records is not None:
                self.deliver(unit, unit.records, unit.from_files)
            else:
                records = self.write(unit)
                self.mark(unit, records)  # last: the marker proves the files are complete
                self.deliver(unit, records)

    def write(self, unit: Unit) -> list[dict]:
        """One example's records, one per method and class, its files written."""
        records = []
        for asked in self.job.methods:
            outcome = unit.outcomes.get(asked) or [unit.problem or "not processed"]
            for item in outcome:
                if isinstance(item, str):
                    records.append(self.record(unit.name, asked, error=item))
                else:
                    records.append(self.write_map(unit, asked, *item, len(outcome) > 1))
        if unit.example is not None:
            unit.adapter.finish(unit.example, records, self.files)
        return records

    def write_map(self, unit: Unit, asked: str, explanation: Explanation, row: int,
                  per_class: bool) -> dict:
        name = explanation.method
        record = self.record(unit.name, name)
        if name != asked and asked not in self._noted:
            self._noted.add(asked)
            self.note(f"onnxpath: note: {asked} falls back to {name}: "
                      f"{explanation.extras[row].get('fallback_reason', '')}")
        raw = explanation.maps[row]
        record["error"] = describe(record, explanation, row, self.label)
        if record["error"] is not None:
            return record
        c = record["target"]
        base = f"{unit.stem}.{name}" + (f".class{c}" if per_class else "")
        title = (asked if name == asked else f"{name} (for {asked})") \
            + (f" {self.label(c) or c}" if per_class else "")
        try:
            self.save(unit, record, base, raw, title)
        except OSError as err:
            record["error"] = cannot_write(self.failed(err) and err)
        except InputError as err:
            record["error"] = self.failed(err)
        except Exception as err:  # a bug: an error line for this example, not a traceback
            record["error"] = self.failed(err, f"writing the results of {unit.name}")
        return record

    def save(self, unit: Unit, record: dict, base: str, raw: np.ndarray, title: str) -> None:
        outputs, files = record["outputs"], self.files
        if (npy := files.npy(base, raw)) is not None:
            outputs["npy"] = npy
        if files.bundle is not None:
            outputs["npz"], outputs["npz_key"] = str(files.bundle.path), files.bundle.add(base,
                                                                                          raw)
        unit.adapter.write(unit.example, raw, base, title, record, files)

    def record(self, name: str, method: str, error: str | None = None) -> dict:
        return blank_record(name, method, self.job.options, error)

    def label(self, c: int) -> str | None:
        labels = self.job.labels
        return labels[c] if labels and 0 <= c < len(labels) else None

    def mark(self, unit: Unit, records: list[dict]) -> None:
        if self.state is not None:
            self.state.mark(unit.name, unit.stem, records, unit.source)

    def deliver(self, unit: Unit, records: list[dict], from_files: bool = False) -> None:
        """Hand one example's records on: --npz (reading maps back from --out when this
        process did not compute them), emit, a line on stderr for each error, the report, the
        failure count, progress."""
        if from_files and self.files.bundle is not None:
            self.files.bundle.add_from_files(records)
        failed = any(record["error"] is not None for record in records)
        self.failures += failed
        self.delivered += 1
        for record in records:
            self.emit(record)
            if record["error"] is not None:  # on stderr too, whatever stdout goes to
                message = " ".join(str(record["error"]).split())
                self.note(f"onnxpath: error: {record['input']} [{record['method']}]: {message}")
            if self.report is not None:
                self.report.add(record)
        if self.progress is not None:
            self.progress.advance(1, failed=int(failed))


def run(explainer: Explainer, paths: Sequence[Path], job: Job,
        emit: Callable[[dict], None] = emit_json) -> int:
    """Library entry point: process `paths`, hand each record to `emit`; returns failures."""
    if job.out is not None:
        check_writable(job.out)
    return RunLoop(explainer, job, emit).run(paths)
