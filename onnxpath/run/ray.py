"""`--engine ray`: the run loop on Ray Data, from a laptop to a cluster, for every modality.

The driver plans as the plain run does (output stems from the manifest, examples already
finished skipped, files of many examples such as CSV tables read and tokenised into examples),
then streams the rest through `map_batches` with `ExplainBatch` on a pool of actors (the model
loads once per actor). Each actor runs the same loop over its share: it reads the files that
hold one example (images, signals), explains and writes the result files, so they are bitwise
those of the plain CLI. The driver writes each example's completion marker when its records
arrive, and prints the records in input order.

Faults: an actor that dies (a crash, the OOM killer, a lost node) is restarted and its batch
retried a finite number of times. A batch that still fails is rerun one input at a time, so
the good inputs around a bad one complete; an input that kills its worker on its own becomes
one error record. Ray Data would otherwise either retry forever or drop the whole block.

Connecting (`ray_connect`): without an address a private local Ray, never the cluster that
/tmp/ray remembers; every connection bounded by `Cluster.timeout` (exit 2 in one line); SIGTERM
stops the run at any stage (exit 143).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import pickle
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from onnxpath.errors import EngineError, UsageError
from onnxpath.explainer import Explainer
from onnxpath.io.modality import Modalities
from onnxpath.io.storage import as_location, location
from onnxpath.io.text import pad_id
from onnxpath.run.job import Job
from onnxpath.run.loop import RunLoop, Unit
from onnxpath.run.ray_connect import (
    KILLED_AT_TEARDOWN,
    POOL_ACTOR_ARGS,
    TIMEOUT,
    check_reachable,
    connect,
    dropping_stderr,
    stopping_on_sigterm,
)

WORKER_DIED = ("the worker died processing this input, alone and on every retry (a crash or "
               "the out-of-memory killer); the other inputs were processed")
INSTALL = "--engine ray needs Ray: pip install 'onnxpath[ray]'"


@dataclass
class Cluster:
    """Where and how wide to run. `actors`: a fixed pool size, or (min, max) to autoscale."""

    address: str | None = None  # None: RAY_ADDRESS, else a new local Ray; "auto"; "ray://h:p"
    actors: int | tuple[int, int] = 2
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    retries: int = 2  # per batch, after its actor died
    rows_per_call: int = 16  # inputs per actor call: what one crash can cost before the rerun
    timeout: float = TIMEOUT  # seconds to connect (or start a local Ray) before exit 2

    def check(self, device: str) -> None:
        if self.gpus_per_actor and device == "cpu":
            raise UsageError("--gpus-per-actor needs --device cuda")
        if not self.timeout > 0:
            raise UsageError(f"--ray-timeout takes seconds above 0, got {self.timeout:g}")


def parse_actors(text: str | int | None) -> int | tuple[int, int]:
    """`--actors N` or `MIN-MAX`."""
    if text is None:
        return 2
    if isinstance(text, int):
        parts = [text]
    else:
        try:
            parts = [int(v) for v in str(text).split("-")]
        except ValueError:
            parts = []
    if len(parts) not in (1, 2) or min(parts) < 1 or parts[0] > parts[-1]:
        raise UsageError(f"--actors takes N or MIN-MAX (e.g. 4 or 2-8), got '{text}'")
    return parts[0] if len(parts) == 1 else (parts[0], parts[1])


def import_ray():
    try:
        import ray
        import ray.data
    except ImportError as err:
        raise EngineError(INSTALL) from err
    return ray


def on_actors(rows: list[dict], worker: type, kwargs: dict, cluster: Cluster, per_call: int,
              arrive: Callable[[int, list[dict]], None], note: Callable[[str], None],
              debug: bool = False) -> list[int]:
    """Map `worker(**kwargs)` (built once per actor) over `rows` (dicts of equal keys, one of
    them `position`) on the actor pool, `per_call` rows a call; hand each row's records to
    `arrive(position, records)` once, as they come. Rows lost with their actor are rerun one at
    a time; the positions still lost after that are returned."""
    ray = import_ray()
    arrived: set[int] = set()

    def once(position: int, records: list[dict]) -> None:
        if position not in arrived:  # a retried batch whose first answer came through after all
            arrived.add(position)
            arrive(position, records)

    stream(ray, rows, worker, kwargs, cluster, per_call, once, debug)
    missing = [row for row in rows if row["position"] not in arrived]
    if missing:
        note(f"onnxpath: note: workers died on {len(missing)} input(s); retrying them one at "
             "a time")
        # One input at a time, and one call per actor at a time (a call queued on an actor
        # dies with it): only the culprits stay lost.
        stream(ray, missing, worker, kwargs, cluster, 1, once, debug)
    return [row["position"] for row in rows if row["position"] not in arrived]


def stream(ray, rows: list[dict], worker: type, kwargs: dict, cluster: Cluster, per_call: int,
           arrive: Callable[[int, list[dict]], None], debug: bool) -> None:
    """One pass of `rows` through a pool of actors: each answered row goes to `arrive`; rows
    whose actor died on every retry are simply missing (Ray Data drops their block)."""
    from ray.data import ActorPoolStrategy, DataContext

    context = DataContext.get_current()
    context.max_errored_blocks = -1  # a lost block is ours to redo, not a failed run
    context.enable_progress_bars = False
    if not debug:  # lost blocks are reported by us, as records
        logging.getLogger("ray.data").setLevel(logging.CRITICAL)
    blocks = math.ceil(len(rows) / per_call)
    # No more actors than blocks: an idle actor would load the model for nothing (and Ray
    # Data warns about it).
    low, high = (cluster.actors, cluster.actors) if isinstance(cluster.actors, int) \
        else cluster.actors
    low, high = min(low, blocks), min(high, blocks)
    sizes = {"size": low} if low == high else {"min_size": low, "max_size": high}
    pool = ActorPoolStrategy(**sizes, max_tasks_in_flight_per_actor=1 if per_call == 1
                             else None)
    env = {k: v for k, v in os.environ.items() if k.startswith("ONNXPATH_")}
    dataset = ray.data.from_items(rows, override_num_blocks=blocks)
    with warnings.catch_warnings():
        # max_task_retries has no named parameter yet; ray_remote_args is its only way in.
        warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
        results = dataset.map_batches(
            worker, fn_constructor_kwargs=kwargs, batch_size=per_call,
            batch_format="numpy", compute=pool,
            num_cpus=cluster.cpus_per_actor,
            num_gpus=cluster.gpus_per_actor or None,
            runtime_env={"env_vars": env} if env else None,
            # Finite: Ray Data retries an actor's task forever by default, so one input
            # that kills its worker would hang the run. Actors restart without limit.
            max_restarts=-1, max_task_retries=cluster.retries)
    with dropping_stderr(None if debug else POOL_ACTOR_ARGS):
        for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
            for position, text in zip(batch["position"], batch["records"], strict=True):
                arrive(int(position), json.loads(text))


class InOrder:
    """Records that arrive in any order, handed on in input order."""

    def __init__(self, order: Sequence[int], deliver: Callable):
        self.order, self.deliver = list(order), deliver
        self.ready: dict[int, tuple] = {}
        self.cursor = 0

    def add(self, position: int, *payload) -> None:
        self.ready[position] = payload
        while self.cursor < len(self.order) and self.order[self.cursor] in self.ready:
            k = self.order[self.cursor]
            self.cursor += 1
            self.deliver(k, *self.ready.pop(k))


# Test-only fault injection (tests/distributed): a worker that finishes an example whose name
# contains $ONNXPATH_TEST_KILL_WORKER exits on the spot, as if it crashed or was OOM-killed,
# after writing that example's files and before returning any record. With
# $ONNXPATH_TEST_KILL_WORKER_ONCE naming a file, only the first such worker dies (it creates
# the file). Nothing sets these variables outside the tests.
KILL = "ONNXPATH_TEST_KILL_WORKER"
KILL_ONCE = "ONNXPATH_TEST_KILL_WORKER_ONCE"


def kill_if_asked(name: str) -> None:
    needle = os.environ.get(KILL)
    if not needle or needle not in name:
        return
    once = os.environ.get(KILL_ONCE)
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    os._exit(77)


def task_row(position: int, unit: Unit) -> dict:
    """A unit as a row of equal-typed columns: a file to read, or an example read already."""
    return {"position": position, "kind": unit.adapter.kind, "name": unit.name,
            "stem": unit.stem, "path": "" if unit.path is None else str(unit.path),
            "example": b"" if unit.example is None else pickle.dumps(unit.example)}


class _Collecting(RunLoop):
    """The loop on a worker: each unit's records kept for the answer, nothing printed."""

    def __init__(self, explainer: Explainer, job: Job):
        super().__init__(explainer, job, emit=lambda record: None)
        self.collected: dict[int, list[dict]] = {}

    def deliver(self, unit: Unit, records: list[dict], from_files: bool = False) -> None:
        kill_if_asked(unit.name)
        self.collected[unit.position] = records


class ExplainBatch:
    """Built once per actor (the model loads once); called once per batch of task rows (see
    `task_row`). The answer has the columns `position` and `records` (each unit's records as
    one JSON text). Resume markers and the --npz bundle are the driver's business."""

    def __init__(self, model: str | os.PathLike, job: Job, pad_id: int = 0,
                 device: str = "cpu", threads: int | None = None, cache: bool | str = True,
                 provider_options: dict[str, str] | None = None, cwd: str | None = None,
                 intake: dict | None = None):
        if cwd and os.path.isdir(cwd) and os.getcwd() != cwd:
            # Same paths as the driver where its folder is visible (a shared filesystem): the
            # records then name inputs and outputs exactly as the plain CLI does.
            os.chdir(cwd)
        # The model as the driver loaded it (`intake`: its --output, --wrt, --target-index
        # and --region choices); the driver's tokenizer stays with the driver.
        self.explainer = Explainer(model, device=device, threads=threads, cache=cache,
                                   provider_options=provider_options, **(intake or {}))
        self.explainer.pad_id = pad_id
        self.job = replace(job, resume=False, npz=None)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        loop = _Collecting(self.explainer, self.job)
        modalities = Modalities(self.explainer, self.job, images=False)
        units = []
        for position, kind, name, stem, path, blob in zip(
                batch["position"], batch["kind"], batch["name"], batch["stem"], batch["path"],
                batch["example"], strict=True):
            units.append(Unit(str(name), str(stem), modalities.of_kind(str(kind)),
                              path=location(str(path)) if path else None,
                              example=pickle.loads(blob) if len(blob) else None,
                              position=int(position)))
        loop.run_units(iter(units), [u.path for u in units if u.path is not None])
        texts = [json.dumps(loop.collected[u.position]) for u in units]
        return {"position": np.asarray(batch["position"], dtype=np.int64),
                "records": np.array(texts, dtype=object)}


class RayLoop(RunLoop):
    """The run loop's planning, resume and reporting on the driver, the rest on Ray."""

    def __init__(self, explainer: Explainer, job: Job, emit: Callable[[dict], None],
                 worker: dict, cluster: Cluster, report=None, progress: bool | None = False,
                 debug: bool = False):
        super().__init__(explainer, job, emit, report, progress, debug)
        self.worker = worker  # ExplainBatch's constructor arguments
        self.cluster = cluster

    def execute(self, units) -> None:
        units = list(units)
        in_order = InOrder(range(len(units)), lambda k, records, from_files:
                           self.deliver(units[k], records, from_files))
        rows = []
        for k, unit in enumerate(units):
            if unit.records is not None:
                in_order.add(k, unit.records, unit.from_files)
            else:
                rows.append(task_row(k, unit))

        def arrive(k: int, records: list[dict], from_files: bool = True) -> None:
            self.mark(units[k], records)  # at once: the worker wrote its files
            in_order.add(k, records, from_files)

        if not rows:
            return
        per_call = max(self.cluster.rows_per_call, self.job.batch_size)
        for k in on_actors(rows, ExplainBatch, self.worker, self.cluster, per_call, arrive,
                           self.note, self.debug):
            arrive(k, [self.record(units[k].name, m, error=WORKER_DIED)
                       for m in self.job.methods], from_files=False)


def run_ray(model: str | os.PathLike, paths: Sequence[str | os.PathLike], job: Job,
            emit: Callable[[dict], None], *, cluster: Cluster | None = None,
            device: str = "cpu", threads: int | None = None, cache: bool = True,
            provider_options: dict[str, str] | None = None,
            explainer: Explainer | None = None, report=None, progress: bool | None = False,
            debug: bool = False) -> int:
    """Process `paths` (and --text) on Ray (see the module docstring); hand each record to
    `emit` in input order; return how many examples failed. `explainer` (on the driver, any
    device) plans: it reads files of many examples, and its model digest keys the resume
    markers. While it runs, sys.stdout is stderr."""
    cluster = cluster or Cluster()
    check(job, cluster, device)
    explainer = explainer or Explainer(model, cache=cache)
    worker = {**worker_arguments(model, explainer, cluster, device, threads, cache,
                                 provider_options),
              "pad_id": pad_id(job.tokenizer) if job.tokenizer is not None
              else explainer.pad_id,
              # Read and resumed on the driver: workers get files and examples, never the
              # tokenizer, --text or markers.
              "job": replace(job, tokenizer=None, text=None, resume=False, npz=None)}
    with on_ray(cluster, debug):
        loop = RayLoop(explainer, job, emit, worker, cluster, report, progress, debug)
        return loop.run([as_location(p) for p in paths])


def check(job, cluster: Cluster, device: str) -> None:
    """What either engine refuses before anything starts."""
    if job.npz is not None and job.out is None:
        raise UsageError("--npz with --engine ray reads the maps back from --out: give --out")
    cluster.check(device)


def worker_arguments(model: str | os.PathLike, explainer: Explainer, cluster: Cluster,
                     device: str, threads: int | None, cache: bool,
                     provider_options: dict[str, str] | None) -> dict:
    """The constructor arguments every actor gets, besides its job."""
    return {"model": os.path.abspath(model), "device": device,
            # ONNX Runtime ignores OMP_NUM_THREADS and would take every core in every actor
            "threads": threads or max(1, int(cluster.cpus_per_actor)), "cache": cache,
            "provider_options": provider_options, "cwd": os.getcwd(),
            # --output, --wrt, --target-index, --region: the driver's choice, made once
            "intake": explainer.intake_options()}


@contextlib.contextmanager
def on_ray(cluster: Cluster, debug: bool):
    """Connected to (or running) a Ray cluster, with sys.stdout sent to stderr: Ray forwards
    workers' stdout, and some of its own messages, to the driver's sys.stdout, where they
    would mix with the JSON lines. `emit` must therefore not look up sys.stdout when it is
    called (the CLI binds its stream beforehand). SIGTERM stops it at any stage, the
    connection included, with exit status 143 (`ray_connect.Terminated`)."""
    ray = import_ray()
    with stopping_on_sigterm() as arm, contextlib.redirect_stdout(sys.stderr), \
            dropping_stderr(None if debug else KILLED_AT_TEARDOWN):
        connection = connect(ray, cluster.address, debug, cluster.timeout)
        arm()  # again: Ray's core worker has installed its own handler
        try:
            yield
        finally:
            if connection is not None:
                connection.close()


__all__ = ["KILL", "Cluster", "ExplainBatch", "RayLoop", "check_reachable", "connect",
           "parse_actors", "run_ray"]
