"""`--engine ray`: the attribute pipeline on Ray Data, from a laptop to a cluster.

The driver plans as the plain CLI does (output stems from the manifest, inputs already finished
skipped), then streams the rest through `map_batches` with `AttributeBatch` on a pool of actors
(the model loads once per actor). Workers write the result files; the driver writes each
input's completion marker when its records arrive, and prints the records in input order.

Faults: an actor that dies (a crash, the OOM killer, a lost node) is restarted and its batch
retried a finite number of times. A batch that still fails is rerun one input at a time, so
the good inputs around a bad one complete; an input that kills its worker on its own becomes
one error record. Ray Data would otherwise either retry forever or drop the whole block.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from onnxpath.errors import EngineError, UsageError
from onnxpath.explainer import Explainer
from onnxpath.io.storage import as_location
from onnxpath.run.loop import Job, Pipeline
from onnxpath.run.progress import Progress
from onnxpath.run.ray_batch import KILL, AttributeBatch

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

    def check(self, device: str) -> None:
        if self.gpus_per_actor and device == "cpu":
            raise UsageError("--gpus-per-actor needs --device cuda")


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


def check_reachable(address: str | None, timeout: float = 10.0) -> None:
    """Ray retries an unreachable head node forever; try its port once, briefly, first."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address or address in ("auto", "local"):
        return  # ray.init itself says at once when there is no local cluster
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--address takes auto, HOST:PORT or ray://HOST:PORT, got '{address}'")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise EngineError(f"cannot reach the Ray cluster at {address}: "
                          f"{err.strerror or type(err).__name__}") from err


def connect(ray, address: str | None, debug: bool = False) -> bool:
    """Join (or start) a cluster; True when this call started the connection."""
    if ray.is_initialized():
        return False
    check_reachable(address)
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=True,
                 logging_level=logging.INFO if debug else logging.ERROR)
    except Exception as err:  # ConnectionError, RuntimeError, ValueError, ... per version
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        where = f"at {address}" if address else "(a new local one)"
        raise EngineError(f"cannot reach the Ray cluster {where}: {first}") from err
    return True


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


class RayPipeline(Pipeline):
    """The plain pipeline's planning, resume and reporting, with the computing on Ray."""

    def __init__(self, explainer: Explainer, job: Job, emit: Callable[[dict], None],
                 worker: dict, cluster: Cluster, progress: Progress | None = None,
                 debug: bool = False):
        super().__init__(explainer, job, emit, progress, note=progress.note if progress
                         else None, debug=debug)
        self.worker = worker  # AttributeBatch's constructor arguments
        self.cluster = cluster

    def execute(self, todo: list[int]) -> None:
        if not todo:
            return
        in_order = InOrder(todo, self.deliver)

        def arrive(position: int, records: list[dict], from_files: bool = True) -> None:
            self.mark(position, records)  # at once: the files are complete
            in_order.add(position, records, from_files)

        rows = [{"position": k, "path": str(self._items[k][0]), "stem": self._items[k][1]}
                for k in todo]
        per_call = max(self.cluster.rows_per_call, self.job.batch_size)
        for k in on_actors(rows, AttributeBatch, self.worker, self.cluster, per_call, arrive,
                           self.note, self.debug):
            arrive(k, [self.record(self._items[k][0], m, error=WORKER_DIED)
                       for m in self.job.methods], from_files=False)


def run_ray(model: str | os.PathLike, paths: Sequence[str | os.PathLike], job: Job,
            emit: Callable[[dict], None], *, cluster: Cluster | None = None,
            device: str = "cpu", threads: int | None = None, cache: bool = True,
            provider_options: dict[str, str] | None = None,
            explainer: Explainer | None = None, progress: Progress | None = None,
            debug: bool = False) -> int:
    """Process `paths` on Ray (see the module docstring); hand each record to `emit` in input
    order; return how many records carry an error. `explainer` (on the driver, any device)
    serves for planning only: its model digest keys the resume markers. While it runs,
    sys.stdout is stderr."""
    cluster = cluster or Cluster()
    check(job, cluster, device)
    explainer = explainer or Explainer(model, cache=cache)
    worker = {**worker_arguments(model, explainer, cluster, device, threads, cache,
                                 provider_options), "job": job}
    with on_ray(cluster, debug):
        pipeline = RayPipeline(explainer, job, emit, worker, cluster, progress, debug)
        return pipeline.run([as_location(p) for p in paths])


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
    called (the CLI binds its stream beforehand)."""
    ray = import_ray()
    with contextlib.redirect_stdout(sys.stderr):
        started = connect(ray, cluster.address, debug)
        try:
            yield
        finally:
            if started:
                ray.shutdown()


__all__ = ["KILL", "Cluster", "RayPipeline", "parse_actors", "run_ray"]
