"""`--engine ray` for tables, series and text: the driver reads every input into examples (a
CSV into its rows, a .jsonl into its lines) and the actors explain them, many examples a call,
so one large table spreads over the whole pool. Records come back in input order; faults are
handled as for images (`on_actors`).
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from onnxpath.explainer import Explainer
from onnxpath.io import Example
from onnxpath.run.modal import ModalJob, ModalRun
from onnxpath.run.ray_batch import kill_if_asked, worker_explainer
from onnxpath.run.ray_engine import (
    WORKER_DIED,
    Cluster,
    InOrder,
    check,
    on_actors,
    on_ray,
    worker_arguments,
)


class ModalBatch:
    """Built once per actor; each call explains a batch of pickled examples. The batch has the
    columns `position` and `example`; the answer, `position` and `records` (JSON text)."""

    def __init__(self, model: str | os.PathLike, job: ModalJob, pad_id: int, device: str = "cpu",
                 threads: int | None = None, cache: bool | str = True,
                 provider_options: dict[str, str] | None = None, cwd: str | None = None,
                 intake: dict | None = None):
        self.explainer = worker_explainer(model, device, threads, cache, provider_options, cwd,
                                          intake)
        self.run = ModalRun(self.explainer, job, emit=lambda record: None,
                            note=lambda line: None)
        self.explainer.pad_id = pad_id  # the driver's tokenizer stays with the driver

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = []
        for blob in batch["example"]:
            example: Example = pickle.loads(blob)
            records = self.run.explain(example)
            kill_if_asked(example.name)
            texts.append(json.dumps(records))
        return {"position": np.asarray(batch["position"], dtype=np.int64),
                "records": np.array(texts, dtype=object)}


class RayModalRun(ModalRun):
    """The modal loop's reading and reporting on the driver, the explaining on Ray."""

    def __init__(self, explainer: Explainer, job: ModalJob, emit: Callable[[dict], None],
                 worker: dict, cluster: Cluster, debug: bool = False):
        super().__init__(explainer, job, emit, debug=debug)
        self.worker = {**worker, "pad_id": explainer.pad_id,
                       # Read on the driver, and resumed there: the workers get examples to
                       # explain, never files, text or markers.
                       "job": replace(job, tokenizer=None, text=None, resume=False, npz=None)}
        self.cluster = cluster

    def run(self, paths: Sequence[Path]) -> int:
        units = list(self.units(paths))
        in_order = InOrder(range(len(units)), self.deliver_at)

        def arrive(k: int, records: list[dict]) -> None:
            self.mark(units[k], records)  # at once: the worker wrote its files
            in_order.add(k, records, True)

        rows = []
        with self.bundled():
            for k, unit in enumerate(units):
                if not isinstance(unit, Example):
                    in_order.add(k, unit, False)  # an unreadable input's error records
                elif (done := self.finished(unit)) is not None:
                    in_order.add(k, done, True)
                else:
                    rows.append({"position": k, "example": pickle.dumps(unit)})
            if rows:
                lost = on_actors(rows, ModalBatch, self.worker, self.cluster,
                                 self.cluster.rows_per_call, arrive, self.note, self.debug)
                for k in lost:
                    in_order.add(k, [self.record(units[k].name, m, WORKER_DIED)
                                     for m in self.job.methods], False)
        return self.failures

    def deliver_at(self, position: int, records: list[dict], from_files: bool) -> None:
        self.deliver(records, from_files)


def run_ray_modal(model: str | os.PathLike, paths: Sequence[Path], job: ModalJob,
                  explainer: Explainer, emit: Callable[[dict], None], *,
                  cluster: Cluster | None = None, device: str = "cpu",
                  threads: int | None = None, cache: bool = True,
                  provider_options: dict[str, str] | None = None,
                  debug: bool = False) -> int:
    """`run_ray` for tables, series and text: how many examples (or unreadable inputs) failed.
    `explainer`, on the driver, reads the inputs. While it runs, sys.stdout is stderr."""
    cluster = cluster or Cluster()
    check(job, cluster, device)
    worker = worker_arguments(model, explainer, cluster, device, threads, cache,
                              provider_options)
    with on_ray(cluster, debug):
        return RayModalRun(explainer, job, emit, worker, cluster, debug).run(paths)
