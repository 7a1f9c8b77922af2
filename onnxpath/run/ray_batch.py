"""`AttributeBatch`: the attribute pipeline as a callable over a batch of columns, the shape
Ray Data's `map_batches` (and any other engine with long-lived workers) calls. It knows nothing
of Ray: the model path and the job go in once, each call takes a batch of inputs and returns
their JSON records, and the result files are written where the job says, by the same code as
the plain CLI, so they are bitwise identical.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from onnxpath.explainer import Explainer
from onnxpath.io.storage import location
from onnxpath.run.loop import Job, Pipeline

# Test-only fault injection (tests/distributed): a worker that finishes an input whose path
# contains $ONNXPATH_TEST_KILL_WORKER exits on the spot, as if it crashed or was OOM-killed,
# after writing that input's files and before returning any record. With
# $ONNXPATH_TEST_KILL_WORKER_ONCE naming a file, only the first such worker dies (it creates
# the file). Nothing sets these variables outside the tests.
KILL = "ONNXPATH_TEST_KILL_WORKER"
KILL_ONCE = "ONNXPATH_TEST_KILL_WORKER_ONCE"


def kill_if_asked(path: Path | str) -> None:
    needle = os.environ.get(KILL)
    if not needle or needle not in str(path):
        return
    once = os.environ.get(KILL_ONCE)
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    os._exit(77)


def worker_explainer(model: str | os.PathLike, device: str, threads: int | None,
                     cache: bool | str, provider_options: dict[str, str] | None,
                     cwd: str | None, intake: dict | None) -> Explainer:
    """A worker's model, loaded as the driver's was (`intake`: its --output, --wrt,
    --target-index and --region choices)."""
    if cwd and os.path.isdir(cwd) and os.getcwd() != cwd:
        # Same paths as the driver where its folder is visible (a shared filesystem): the
        # records then name inputs and outputs exactly as the plain CLI does.
        os.chdir(cwd)
    return Explainer(model, device=device, threads=threads, cache=cache,
                     provider_options=provider_options, **(intake or {}))


class _Collecting(Pipeline):
    """The pipeline, keeping each input's records instead of printing them."""

    def __init__(self, explainer: Explainer, job: Job):
        super().__init__(explainer, job, emit=lambda record: None)
        self.collected: dict[int, list[dict]] = {}

    def completed(self, position: int, records: list[dict]) -> None:
        kill_if_asked(self._items[position][0])
        self.collected[position] = records


class AttributeBatch:
    """Built once per worker (the model loads once); called once per batch.

    A batch is a dict of equal-length columns: `position` (the input's place in the whole
    run), `path` (what to read) and `stem` (the output name, fixed by the driver so that it
    does not depend on which inputs share a batch). The answer has the columns `position` and
    `records` (each input's records as one JSON text). Resume markers and the --npz bundle are
    the driver's business, so the job's `resume` and `npz` are ignored here.
    """

    def __init__(self, model: str | os.PathLike, job: Job, device: str = "cpu",
                 threads: int | None = None, cache: bool | str = True,
                 provider_options: dict[str, str] | None = None, cwd: str | None = None,
                 intake: dict | None = None):
        self.explainer = worker_explainer(model, device, threads, cache, provider_options, cwd,
                                          intake)
        self.job = replace(job, resume=False, npz=None)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [location(str(p)) for p in batch["path"]]
        stems = [str(s) for s in batch["stem"]]
        pipeline = _Collecting(self.explainer, self.job)
        pipeline.run(paths, stems)
        texts = [json.dumps(pipeline.collected[i]) for i in range(len(paths))]
        return {"position": np.asarray(batch["position"], dtype=np.int64),
                "records": np.array(texts, dtype=object)}
