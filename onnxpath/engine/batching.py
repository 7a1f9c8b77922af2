"""Forward-only work at ONNX Runtime's own throughput: the batching machinery that occlusion,
RISE, LIME/KernelSHAP and the perturbation protocols share.

- Perturbed rows are written by a vectorised `fill(start, stop, out)` straight into one of three
  reused input buffers, never stacked per example in Python.
- The next batch is built on a worker thread while ONNX Runtime runs the current one (ORT and
  numpy release the GIL), so building costs no wall time when a core is free.
- The batch size defaults to the one with the lowest measured time per row for the model and
  device (`fastest_batch`), measured once per engine and remembered in the session cache.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import numpy as np

Forward = Callable[[np.ndarray], np.ndarray]
Fill = Callable[[int, int, np.ndarray], None]

CANDIDATES = (1, 2, 4, 8, 16, 32, 64, 128)
BUFFER_BYTES = 1 << 28  # one input buffer stays under 256 MB: three are alive at once
MEASURE_SECONDS = 2.0  # time spent looking for the fastest batch size, at most (roughly)
GAIN = 0.95  # a larger batch must save 5% per row to be worth its memory
MEMO = "batch_sizes.json"


class BufferRing:
    """`count` preallocated input buffers of `rows` rows, handed out in turn. With a queue of
    one between producer and consumer, three buffers are never in use twice at once: one being
    filled, one waiting, one being run."""

    def __init__(self, rows: int, shape: tuple[int, ...], dtype=np.float32, count: int = 3):
        self.buffers = [np.empty((rows, *shape), dtype) for _ in range(count)]
        self.turn = 0

    def next(self) -> np.ndarray:
        buffer = self.buffers[self.turn % len(self.buffers)]
        self.turn += 1
        return buffer


_DONE = object()


def pipelined(forward: Forward, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """forward(b) for each b of `batches`, in order; the batches are produced on a worker
    thread, one ahead of `forward`. An exception in the producer is raised here."""
    handoff: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def produce() -> None:
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        handoff.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            handoff.put(_DONE)
        except BaseException as err:  # handed to the consumer, which raises it
            handoff.put(err)

    worker = threading.Thread(target=produce, name="onnxpath-batch-builder", daemon=True)
    worker.start()
    try:
        while True:
            item = handoff.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield forward(item)
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            handoff.get_nowait()  # unblock a producer waiting to put
        worker.join()


def even_rows(total: int, batch: int) -> int:
    """Rows per run so that `total` rows take as few runs as `batch` rows per run would, in
    runs of (nearly) equal size: 20 rows at 16 run as 10 + 10, not 16 + 4, whose short run
    costs more per row than any other (a run's fixed cost spread over few rows)."""
    batch = max(1, min(int(batch), total))
    runs = -(-total // batch)
    return -(-total // runs)


def forward_rows(forward: Forward, total: int, shape: tuple[int, ...], fill: Fill,
                 batch: int, fixed: int | None = None, dtype=np.float32) -> np.ndarray:
    """Logits of `total` rows that `fill(start, stop, out)` writes (rows start..stop-1 into
    out[:stop - start]), `batch` rows per run. A model with a fixed batch size `fixed` gets
    exactly that many rows each run, the last run padded with zeros and cut again; otherwise
    the runs are of even size (`even_rows`)."""
    if total == 0:
        return np.zeros((0, 0), np.float32)
    rows = fixed or even_rows(total, batch)
    ring = BufferRing(rows, shape, dtype)
    starts = range(0, total, rows)

    def batches() -> Iterator[np.ndarray]:
        for start in starts:
            stop = min(start + rows, total)
            out = ring.next()
            fill(start, stop, out[:stop - start])
            if fixed:
                out[stop - start:] = 0
                yield out
            else:
                yield out[:stop - start]

    parts = [logits[:min(rows, total - start)]
             for logits, start in zip(pipelined(forward, batches()), starts, strict=True)]
    return np.concatenate(parts)


def fastest_batch(engine, shape: tuple[int, ...], most: int | None = None) -> int:
    """The batch size with the lowest time per row for `engine`'s forward pass on rows of
    `shape`: doubling from 1 while it saves at least 5% per row, within ~2 s of measuring.
    Measured once per engine and shape, and remembered in the engine's session cache (keyed
    like its sessions: model, device, providers, CPU, onnxruntime version)."""
    fixed = _fixed(engine)
    if fixed:
        return fixed
    known = getattr(engine, "_fastest", None)
    if known is None:
        known = engine._fastest = {}
    key = tuple(shape)
    if key not in known:
        known[key] = _remembered(engine, key) or _measure(engine, key)
    best = known[key]
    return max(1, min(best, most)) if most else best


def _fixed(engine) -> int | None:
    first = engine.info.input_shape[0] if engine.info.input_shape else None
    return first if isinstance(first, int) and first > 0 else None


def _measure(engine, shape: tuple[int, ...]) -> int:
    row_bytes = int(np.prod(shape)) * 4
    best, best_time, spent = 1, float("inf"), 0.0
    for size in CANDIDATES:
        if size * row_bytes > BUFFER_BYTES or spent > MEASURE_SECONDS:
            break
        x = np.zeros((size, *shape), np.float32)
        start = time.perf_counter()
        engine.logits(x)  # first run at a new size allocates: not timed
        runs = []  # the minimum of >= 3 runs, more (up to 20) while they take under 50 ms
        while len(runs) < 3 or (sum(runs) < 0.05 and len(runs) < 20):
            t = time.perf_counter()
            engine.logits(x)
            runs.append(time.perf_counter() - t)
        spent += time.perf_counter() - start
        per_row = min(runs) / size
        if per_row < best_time * GAIN:
            best, best_time = size, per_row
        elif size >= 2 * best and per_row >= best_time:
            break  # two doublings without a gain: past the knee
    _remember(engine, shape, best)
    return best


def _memo_key(engine, shape: tuple[int, ...]) -> tuple | None:
    if engine.cache is None or engine.identity is None:
        return None
    from onnxpath.engine.cache import entry_key
    from onnxpath.ort.sessions import providers_for
    return engine.cache.folder / MEMO, entry_key(
        ("fastest-batch", *engine.identity), (shape, engine.threads), engine.device,
        providers_for(engine.device))


def _remembered(engine, shape: tuple[int, ...]) -> int | None:
    where = _memo_key(engine, shape)
    if where is None:
        return None
    try:
        value = json.loads(where[0].read_text()).get(where[1])
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and value > 0 else None


def _remember(engine, shape: tuple[int, ...], size: int) -> None:
    where = _memo_key(engine, shape)
    if where is None:
        return
    path, key = where
    with contextlib.suppress(OSError, ValueError):
        try:
            memo = json.loads(path.read_text())
        except (OSError, ValueError):
            memo = {}
        memo = memo if isinstance(memo, dict) else {}
        memo[key] = size
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".batch_sizes.", suffix=".part", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(memo, f)
        os.replace(tmp, path)


def engine_rows(engine, total: int, shape: tuple[int, ...], fill: Fill,
                batch: int | None = None) -> np.ndarray:
    """forward_rows over `engine`'s forward pass; `batch` None (or < 1) takes the fastest."""
    size = batch if batch and batch > 0 else fastest_batch(engine, shape, most=total)
    return forward_rows(engine.logits, total, shape, fill, size, _fixed(engine))
