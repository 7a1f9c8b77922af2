"""One copy of a model's weights per process, shared by every graph derived from it.

onnxpath rewrites a model many times (normalisation, the probe, gradient graphs, pathway
surgery, taps) and hands each result to ONNX Runtime. With the weights inside the protobuf,
every `CopyFrom` and every serialisation copies them: a ViT-L/16 (1.2 GB) peaked at 9.6 GB, and
the graphs of a model past 2 GB could not be serialised at all.

So the big initializers leave the protobuf as soon as the model is read: `detach` writes them
once into one weights file per model (page-aligned, in the cache folder's `weights/`, reused by
later processes) and puts placeholders in their place, external tensors whose location names
the store (`onnxpath-in-memory/<key>`). Graphs then stay small however often they are copied
or serialised (never a protobuf over 2 GB), and `make_session` turns the placeholders into
external-data references into that file, which ONNX Runtime memory-maps instead of copying
(its `add_external_initializers` copies the buffers it is given: measured, one full copy per
session). Code that reads a weight's values (gradient rules, LRP plans) gets a read-only
np.memmap of the same file.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IN_MEMORY = "onnxpath-in-memory"  # shared with sessions.py's spill placeholders
PREFIX = IN_MEMORY + "/"
BIG_TENSOR = 4096  # elements: smaller initializers (shape constants) stay in the graph
# Models whose big initializers total less stay as they are: their copies cost little, and
# their cache entries keep ORT's optimised graph (the fastest warm start).
DETACH_MIN_BYTES = 16 << 20

ALIGN = 1 << 16  # offsets in the weights file: ORT memory-maps page-aligned external data
WEIGHTS_SUFFIX = ".weights"

_STORES: dict[str, WeightStore] = {}


def default_folder() -> Path:
    """`$ONNXPATH_CACHE_DIR`, else `$XDG_CACHE_HOME/onnxpath`, else `~/.cache/onnxpath` (the
    session cache's folder: engine/cache.py)."""
    if os.environ.get("ONNXPATH_CACHE_DIR"):
        return Path(os.environ["ONNXPATH_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "onnxpath"


class WeightStore:
    """The detached weights of one model: one file of them, page-aligned, and where each
    tensor lies in it. ONNX Runtime memory-maps the file (no copy per session: its pages are
    the page cache's); code that reads a weight's values gets a read-only np.memmap."""

    def __init__(self, stamp: tuple, folder: Path):
        self.key = hashlib.sha256(repr(stamp).encode()).hexdigest()[:24]
        self.stamp = stamp
        self.folder = folder
        self.file = f"{self.key}{WEIGHTS_SUFFIX}"
        self.spans: dict[str, tuple[int, int, int, tuple]] = {}  # offset, bytes, type, dims
        self.files: dict[str, str] = {}  # tensors read from the model's own data files
        self._maps: dict[str, np.ndarray] = {}

    @property
    def location(self) -> str:
        return PREFIX + self.key

    @property
    def path(self) -> Path:
        return self.folder / self.file

    @property
    def nbytes(self) -> int:
        return sum(span[1] for span in self.spans.values())

    def array(self, name: str) -> np.ndarray:
        if name not in self._maps:
            offset, _, elem, dims = self.spans[name]
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem))
            self._maps[name] = np.memmap(self.folder / self.files.get(name, self.file),
                                         dtype=dtype, mode="r", offset=offset, shape=dims)
        return self._maps[name]

    def reference(self, tensor: TensorProto) -> TensorProto:
        """The placeholder as a real external-data reference into the weights file."""
        offset, nbytes, _, _ = self.spans[tensor.name]
        ref = TensorProto(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims,
                          data_location=TensorProto.EXTERNAL)
        for key, value in (("location", self.files.get(tensor.name, self.file)),
                           ("offset", str(offset)),
                           ("length", str(nbytes))):
            ref.external_data.add(key=key, value=value)
        return ref


def live_files() -> set[Path]:
    """The weights files this process's models read (resolved paths)."""
    return {store.path.resolve() for store in _STORES.values()}


def store_of(tensor: TensorProto) -> WeightStore | None:
    """The store a placeholder points at (None for any other tensor)."""
    if tensor.data_location != TensorProto.EXTERNAL:
        return None
    where = next((e.value for e in tensor.external_data if e.key == "location"), "")
    return _STORES.get(where[len(PREFIX):]) if where.startswith(PREFIX) else None


def is_placeholder(tensor: TensorProto) -> bool:
    if tensor.data_location != TensorProto.EXTERNAL:
        return False
    return next((e.value for e in tensor.external_data if e.key == "location"),
                "").startswith(PREFIX)


def array_of(tensor: TensorProto) -> np.ndarray | None:
    """A placeholder's value (read-only, not a copy), or None when `tensor` is not one."""
    store = store_of(tensor)
    return None if store is None else store.array(tensor.name)


_to_array = numpy_helper.to_array


def _to_array_or_shared(tensor: TensorProto, base_dir: str = "") -> np.ndarray:
    """numpy_helper.to_array that reads a placeholder as its value: every reader of initializer
    values (gradient rules, LRP plans, the float64 tool, ...) keeps working on detached models.
    The array is a read-only view: a caller that would change it in place fails loudly instead
    of changing the weights every graph shares."""
    array = array_of(tensor)
    if array is None:
        return _to_array(tensor, base_dir)
    view = array.view(np.ndarray)
    view.flags.writeable = False
    return view


numpy_helper.to_array = _to_array_or_shared


def placeholder(tensor: TensorProto, location: str, nbytes: int) -> TensorProto:
    ref = TensorProto(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims,
                      data_location=TensorProto.EXTERNAL)
    for key, value in (("location", location), ("offset", "0"), ("length", str(nbytes))):
        ref.external_data.add(key=key, value=value)
    return ref


def _big(tensor: TensorProto) -> bool:
    n = 1
    for d in tensor.dims:
        n *= d
    return n > BIG_TENSOR and tensor.data_type != TensorProto.STRING


def _tensor_bytes(tensor: TensorProto, folder: Path | None) -> bytes:
    if tensor.data_location != TensorProto.EXTERNAL:
        return tensor.raw_data if tensor.HasField("raw_data") else \
            numpy_helper.to_array(tensor).tobytes()
    info = {e.key: e.value for e in tensor.external_data}
    with open(folder / info["location"], "rb") as f:
        f.seek(int(info.get("offset", 0)))
        length = info.get("length")
        return f.read(int(length)) if length else f.read()


def trim(folder: Path) -> None:
    """Keep the weights files within `ONNXPATH_CACHE_MAX_MB` (4096 by default, the session
    cache's bound), least recently used first, never one this process reads: a model exported
    afresh on every run (benchmarks, tests) leaves a file each time, and --no-cache runs never
    reach the session cache's own trimming."""
    limit = float(os.environ.get("ONNXPATH_CACHE_MAX_MB") or 4096) * 2**20
    files = []
    for path in folder.glob(f"*{WEIGHTS_SUFFIX}"):
        with contextlib.suppress(OSError):
            stat = path.stat()
            files.append((stat.st_mtime, stat.st_size, path))
    total = sum(size for _, size, _ in files)
    live = live_files()
    for _, size, path in sorted(files):
        if total <= limit:
            break
        if path.resolve() not in live:
            path.unlink(missing_ok=True)
            total -= size


def _page_aligned(tensors: list[TensorProto]) -> bool:
    for t in tensors:
        if t.data_location != TensorProto.EXTERNAL:
            return False
        info = {e.key: e.value for e in t.external_data}
        if int(info.get("offset", 0)) % 4096:
            return False
    return True


def _remove(path: Path, owner: int) -> None:
    """A private weights file at exit, and its folder if that is then empty; only by the
    process that wrote it (a forked child runs its parent's exit handlers too)."""
    if os.getpid() != owner:
        return
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)
        path.parent.rmdir()


def _writable(folder: Path) -> Path:
    """`folder`, or a temporary folder (removed at exit) when it cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe."):
            return folder
    except OSError:
        import shutil
        made = Path(tempfile.mkdtemp(prefix="onnxpath-weights-"))
        atexit.register(shutil.rmtree, made, True)
        return made


def _write(store: WeightStore, tensors: list[TensorProto], folder: Path | None,
           reuse: bool = True) -> None:
    """Write the weights file (atomically: a temporary file renamed), recording the spans.
    An existing file of the right size for the same stamp is reused (a warm start) unless
    `reuse` is false."""
    offset, spans = 0, {}
    for tensor in tensors:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
        nbytes = int(np.prod(tensor.dims, dtype=np.int64)) * dtype.itemsize
        spans[tensor.name] = (offset, nbytes, tensor.data_type, tuple(tensor.dims))
        offset += -(-nbytes // ALIGN) * ALIGN
    store.spans = spans
    with contextlib.suppress(OSError):
        if reuse and store.path.stat().st_size == offset:
            os.utime(store.path)  # recently used: the cache trims it last
            return
    fd, tmp = tempfile.mkstemp(prefix=f".{store.file}.", suffix=".part", dir=store.folder)
    try:
        with os.fdopen(fd, "wb") as f:
            for tensor in tensors:
                f.seek(spans[tensor.name][0])
                f.write(_tensor_bytes(tensor, folder))
            f.truncate(offset)
        os.replace(tmp, store.path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def detach(model: onnx.ModelProto, folder: Path | None, stamp: tuple,
           weights_folder: Path | None = None, private: bool = False) -> onnx.ModelProto:
    """`model` with its big top-level initializers moved to one weights file per model (named
    by `stamp`, e.g. the file's path, size and mtime; in `weights_folder`, default the cache
    folder), placeholders in their place. Returns a new, light ModelProto; the caller drops
    `model` so its bytes are freed. Models with little weight are returned as they are.

    A `private` file (a run without the cache) is this process's own: written afresh under a
    name no other process uses, never an earlier run's, and removed when the process exits.
    It still lies in the cache folder, on disk: a temporary folder may be memory."""
    if private:
        stamp = (*stamp, "private", os.getpid())
    graph = model.graph
    big = [t for t in graph.initializer if _big(t) and not is_placeholder(t)]
    external = any(t.data_location == TensorProto.EXTERNAL for t in big)
    inline = sum(t.ByteSize() for t in big if t.data_location != TensorProto.EXTERNAL)
    if (inline < DETACH_MIN_BYTES and not external) or (external and folder is None):
        return model
    key = WeightStore(stamp, Path()).key
    store = _STORES.get(key)
    if store is None and folder is not None and _page_aligned(big):
        # Already external, each tensor at a page boundary (torch's one file per tensor):
        # ORT maps the model's own files; nothing is copied.
        store = WeightStore(stamp, folder)
        for t in big:
            info = {e.key: e.value for e in t.external_data}
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type))
            nbytes = int(np.prod(t.dims, dtype=np.int64)) * dtype.itemsize
            store.spans[t.name] = (int(info.get("offset", 0)), nbytes, t.data_type,
                                   tuple(t.dims))
            store.files[t.name] = info["location"]
        _STORES[store.key] = store
    if store is None or not (store.files or store.path.is_file()):
        store = WeightStore(stamp, _writable(weights_folder or default_folder() / "weights"))
        _write(store, big, folder, reuse=not private)
        if private:
            atexit.register(_remove, store.path, os.getpid())
        _STORES[store.key] = store
        trim(store.folder)
    kept = [placeholder(t, store.location, store.spans[t.name][1])
            if _big(t) and t.name in store.spans else t for t in graph.initializer]
    light = helper.make_graph(list(graph.node), graph.name, list(graph.input),
                              list(graph.output), initializer=kept,
                              value_info=list(graph.value_info),
                              sparse_initializer=list(graph.sparse_initializer))
    light.doc_string = graph.doc_string
    result = helper.make_model(light, opset_imports=model.opset_import,
                               ir_version=model.ir_version)
    for field in ("producer_name", "producer_version", "domain", "model_version",
                  "doc_string"):
        setattr(result, field, getattr(model, field))
    result.metadata_props.extend(model.metadata_props)
    result.functions.extend(model.functions)
    return result


def shared_bytes(model: onnx.ModelProto) -> int:
    """How many bytes of shared weights `model`'s placeholders stand for."""
    return sum(store.spans[t.name][1] for t in model.graph.initializer
               if (store := store_of(t)) is not None)


def file_references(model: onnx.ModelProto) -> tuple[onnx.ModelProto, Path | None]:
    """(a copy of `model` whose placeholders are external-data references into their weights
    file, the folder ONNX Runtime resolves them in), or (`model`, None) without placeholders."""
    stores = stores_of(model)
    if not stores:
        return model, None
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for tensor in copy.graph.initializer:
        store = store_of(tensor)
        if store is not None:
            tensor.CopyFrom(store.reference(tensor))
    return copy, stores[0].folder


def inline(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` whose placeholders hold their values again (for writing a model that
    fits one protobuf)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for tensor in copy.graph.initializer:
        array = array_of(tensor)
        if array is not None:
            tensor.CopyFrom(numpy_helper.from_array(np.asarray(array), tensor.name))
    return copy


def relocate(model: onnx.ModelProto, store: WeightStore) -> onnx.ModelProto:
    """Point every placeholder of `model` (a cached graph written by another process) at
    `store`, in place."""
    for tensor in model.graph.initializer:
        if is_placeholder(tensor):
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = store.location
    return model


def stores_of(model: onnx.ModelProto) -> list[WeightStore]:
    found = {}
    for tensor in model.graph.initializer:
        store = store_of(tensor)
        if store is not None:
            found[store.key] = store
    return list(found.values())
