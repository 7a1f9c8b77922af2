"""The on-disk session cache: ONNX Runtime's optimised graphs, so a second process skips the
gradient-graph build and the graph optimisation.

Creating a session for ResNet-50's gradient graph costs about 0.8 s of graph optimisation after
about 0.25 s of autodiff; opening the optimised model that ORT saved (`optimized_model_filepath`)
with optimisations off costs about 0.25 s. A shell loop that calls onnxpath once per image
therefore pays the build once.

An optimised model is specific to the ORT version, the execution provider and the CPU (ORT's
NCHWc layout transform picks kernels for the instruction set), so all of those are part of the
key, with everything that changes the graph: the model's bytes, onnxpath's own code, the input
shape, and the engine's recipe (wrt tensors, rule overrides, extra outputs, surgery options).

Entries are written atomically (ORT writes a temporary file that is then renamed), an entry that
fails to load is deleted and rebuilt, and the folder is trimmed to `ONNXPATH_CACHE_MAX_MB`
(least recently used first). Models whose weights live in external data files are not cached:
the optimised copy would duplicate gigabytes of weights.

Models with more than a few MB of weights keep them in one shared store per process
(ort/weights.py). For those an entry is onnxpath's own graph *without weights* (`GRAPH_SUFFIX`,
a few MB even for ViT-L): ORT's optimised graph would embed a copy of the weights per method
variant (four 243 MB entries for one AlexNet) and past 2 GB cannot be written at all (ViT-L's
gradient graph failed with INVALID_PROTOBUF). The weights come from the model file, read once
per process; the cache holds none of them. A warm start then skips the gradient-graph build but
not ORT's graph optimisation.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import tempfile
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import onnx
import onnxruntime as ort

from onnxpath.errors import OnnxPathError
from onnxpath.ort.weights import WEIGHTS_SUFFIX, WeightStore, live_files, relocate

CACHE_FORMAT = 2  # bump when the entry layout changes
DEFAULT_MAX_MB = 4096
SUFFIX = ".ort.onnx"
NOTE_SUFFIX = ".note.json"
GRAPH_SUFFIX = ".graph.onnx"  # a graph whose weights are placeholders (see the module doc)


def cache_dir() -> Path:
    """`$ONNXPATH_CACHE_DIR`, else `$XDG_CACHE_HOME/onnxpath`, else `~/.cache/onnxpath`."""
    if os.environ.get("ONNXPATH_CACHE_DIR"):
        return Path(os.environ["ONNXPATH_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "onnxpath"


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes: about 0.1 s for ResNet-50's 100 MB, a tenth of a build."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def bytes_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@lru_cache(maxsize=1)
def code_digest() -> str:
    """A digest of onnxpath's own source. The version number alone would serve stale graphs to a
    development checkout whose gradient rules changed; hashing ~100 small files costs ~5 ms."""
    from onnxpath.version import __version__

    root = Path(__file__).resolve().parents[1]  # the whole package
    digest = hashlib.sha256(__version__.encode())
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@lru_cache(maxsize=1)
def cpu_identity() -> str:
    """The machine type and the CPU's model name and feature flags (what NCHWc kernels depend
    on). Another CPU model gets its own entries."""
    parts = [platform.machine(), platform.system()]
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = platform.processor()
    for line in text.splitlines():
        key = line.split(":", 1)[0].strip()
        if key in ("model name", "flags", "Features", "CPU part"):
            parts.append(line)
            if len(parts) >= 6:
                break
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def entry_key(identity: tuple, recipe: tuple, device: str, providers: list[str]) -> str:
    """The file name of one session's entry: everything the optimised graph depends on."""
    fields = [CACHE_FORMAT, code_digest(), ort.__version__, device, providers, cpu_identity(),
              identity, recipe]
    return hashlib.sha256(json.dumps(fields, default=repr).encode()).hexdigest()[:40]


class SessionCache:
    """One folder of optimised models. `session(key, build_model, create)` returns a session
    from the entry when it loads, else builds one and saves the entry."""

    def __init__(self, folder: str | os.PathLike | None = None, max_mb: float | None = None):
        self.folder = Path(folder) if folder is not None else cache_dir()
        env_max = os.environ.get("ONNXPATH_CACHE_MAX_MB")
        self.max_bytes = int((max_mb if max_mb is not None else
                              float(env_max) if env_max else DEFAULT_MAX_MB) * 2**20)
        self.hits = 0
        self.misses = 0

    def digest(self, model: str | os.PathLike) -> str:
        """file_digest, remembered per (path, size, mtime, inode) in the cache folder: a warm
        start then skips reading and hashing the model (~0.1 s of ~0.8 s for ResNet-50)."""
        path = Path(model).resolve()
        stat = path.stat()
        stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
        memo_path = self.folder / "digests.json"
        try:
            memo = json.loads(memo_path.read_text())
        except (OSError, ValueError):
            memo = {}
        known = memo.get(str(path)) if isinstance(memo, dict) else None
        if isinstance(known, list) and known[:3] == stamp and isinstance(known[3], str):
            return known[3]
        digest = file_digest(path)
        memo = memo if isinstance(memo, dict) else {}
        memo[str(path)] = [*stamp, digest]
        with contextlib.suppress(OSError):
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".digests.", suffix=".part", dir=self.folder)
            with os.fdopen(fd, "w") as f:
                json.dump(memo, f)
            os.replace(tmp, memo_path)
        return digest

    def path(self, key: str) -> Path:
        return self.folder / f"{key}{SUFFIX}"

    def load(self, key: str, open_saved: Callable[[str], object]):
        """The session from the entry, or None when there is none or it does not load (then
        the entry is deleted so that the rebuilt one replaces it)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            session = open_saved(str(path))
        except OnnxPathError:  # the device, not the entry, is at fault
            raise
        except Exception:  # a truncated or foreign file: rebuild rather than fail
            path.unlink(missing_ok=True)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # least recently used goes first when trimming
        self.hits += 1
        return session

    def temporary(self, key: str) -> Path | None:
        """A temporary file name in the cache folder for ORT to write the entry to, or None
        when the folder cannot be written (the cache is then skipped, silently)."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".part", dir=self.folder)
            os.close(fd)
            return Path(tmp)
        except OSError:
            return None

    def commit(self, key: str, tmp: Path) -> None:
        """Move ORT's freshly written file into place, then trim the folder."""
        self.misses += 1
        try:
            if tmp.stat().st_size > 0:
                os.replace(tmp, self.path(key))
        except OSError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        self.trim()

    def load_note(self, key: str) -> dict | None:
        """A small JSON note kept beside the sessions (the probed shapes of a model), or None."""
        try:
            note = json.loads((self.folder / f"{key}{NOTE_SUFFIX}").read_text())
        except (OSError, ValueError):
            return None
        return note if isinstance(note, dict) else None

    def save_note(self, key: str, note: dict) -> None:
        """Write a note atomically; a folder that cannot be written skips it, silently."""
        with contextlib.suppress(OSError):
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".part", dir=self.folder)
            with os.fdopen(fd, "w") as f:
                json.dump(note, f)
            os.replace(tmp, self.folder / f"{key}{NOTE_SUFFIX}")

    def graph_session(self, key: str, build: Callable[[], onnx.ModelProto],
                      make: Callable[[onnx.ModelProto], object], store: WeightStore):
        """A session over the weightless graph of entry `key` (built and saved when absent),
        its placeholders pointed at `store`. `make` creates the session from the graph."""
        path = self.folder / f"{key}{GRAPH_SUFFIX}"
        if path.is_file():
            try:
                model = relocate(onnx.load(str(path), load_external_data=False), store)
            except Exception:  # a truncated or foreign file: rebuild rather than fail
                path.unlink(missing_ok=True)
            else:
                with contextlib.suppress(OSError):
                    os.utime(path)
                self.hits += 1
                return make(model)
        model = build()
        session = make(model)
        self.misses += 1
        tmp = self.temporary(key)
        if tmp is not None:
            try:
                tmp.write_bytes(model.SerializeToString())
                os.replace(tmp, path)
            except (OSError, ValueError):  # a full disk, or a graph past 2 GB: not cached
                tmp.unlink(missing_ok=True)
            self.trim()
        return session

    def entries(self) -> list[Path]:
        try:  # the weights files (ort/weights.py) count too, least recently read first
            weights = list((self.folder / "weights").glob(f"*{WEIGHTS_SUFFIX}"))
            return [p for p in self.folder.iterdir()
                    if p.name.endswith(SUFFIX) or p.name.endswith(GRAPH_SUFFIX)] + weights
        except OSError:
            return []

    def trim(self) -> None:
        entries = []
        for path in self.entries():
            try:
                stat = path.stat()
            except OSError:
                continue
            entries.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in entries)
        live = live_files()  # this process's weights files: later sessions still read them
        for _, size, path in sorted(entries, key=lambda e: e[0]):
            if total <= self.max_bytes:
                break
            if path.resolve() in live:
                continue
            path.unlink(missing_ok=True)
            total -= size

    def clear(self) -> int:
        """Delete every entry (and stray temporary files); returns how many entries went."""
        entries = self.entries()
        for path in entries:
            path.unlink(missing_ok=True)
        for note in self.folder.glob(f"*{NOTE_SUFFIX}") if self.folder.is_dir() else []:
            note.unlink(missing_ok=True)
        for stray in self.folder.glob(".*.part") if self.folder.is_dir() else []:
            stray.unlink(missing_ok=True)
        return len(entries)
