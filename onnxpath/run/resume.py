"""Resumable runs: what `OUT/.onnxpath/` remembers between runs into the same --out.

- `manifest.json` fixes each input's output stem the first time it is seen. `output_stems`
  depends on the whole input list, so without it, adding `b/cat.png` to a run that already
  wrote `cat.*` for `a/cat.png` would rename the earlier results. Its read-modify-write holds
  `OUT/.onnxpath/lock` (flock), so two runs adding inputs to one local --out at the same time
  both keep theirs, with distinct stems. Object storage has no such lock: there, two runs
  adding inputs to one --out URL at once may lose one run's manifest entries.
- `done/<stem>.json`, the input's completion marker, holds its JSON records, the job's
  fingerprint and the input file's identity and content digest (see `Source`). It is written
  after every file of that input, so a marker proves the files are complete; a rerun of the
  same job over the same input content skips the input and re-emits its records.

Only inputs whose records all succeeded get a marker: a failed input is tried again. A marker
is ignored, and the input redone, when its job differs (anything that can change a byte of a
result: the model file, the methods and their options, the target, the model-intake choices,
preprocessing, rendering, the content of every file an option names), when the input's
content changed, or when its result files have gone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from onnxpath.io.inputs import RUN_STATE, output_stems
from onnxpath.io.outputs import write_atomic
from onnxpath.io.storage import RemotePath, filesystem, is_url
from onnxpath.version import __version__

try:
    import fcntl
except ImportError:  # Windows: no lock on the manifest
    fcntl = None

STATE = RUN_STATE  # OUT/.onnxpath/
FORMAT = 1
FILE_KEYS = ("npy", "png", "csv", "side_by_side")  # record outputs that are files under --out
# A file modified this close to the moment its identity was taken may be rewritten later
# with the same size and mtime (coarse timestamps): such an identity proves nothing, and the
# next run compares the content ("racy git").
RACY_NS = 2_000_000_000
# What object stores report about an object's version, where fsspec's info has it.
REMOTE_KEYS = ("size", "ETag", "etag", "md5Hash", "crc32c", "generation", "version_id",
               "VersionId", "LastModified", "last_modified", "mtime", "updated", "created")


def job_fingerprint(model_digest: str, job, images: bool, intake: dict | None = None) -> str:
    """Everything a result depends on: the model file, the model-intake choices (`intake`:
    `Explainer.intake_options()`, a --region mask by content), the job's result fields for this
    modality (see `Job.result_fields`) and the content of every file a method option names
    (--baseline FILE.npy); not where it is written and how fast (--out, --npz, batch size,
    device, threads)."""
    fields = {"version": __version__, "model": model_digest, "intake": identity(intake)}
    fields.update({name: identity(value) for name, value in job.result_fields(images).items()})
    fields["named_files"] = named_files(job.options)
    text = json.dumps(fields, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def identity(value):
    """A job field as JSON: dataclasses as dicts, sequences as lists, arrays (a --region mask)
    and a tokenizer as the digest of their content (a tokenizer's repr holds a memory
    address)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return identity(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(key): identity(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [identity(item) for item in value]
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value)
        return {"shape": list(data.shape), "dtype": str(data.dtype),
                "sha256": hashlib.sha256(data.tobytes()).hexdigest()}
    if hasattr(value, "to_str"):
        return hashlib.sha256(value.to_str().encode()).hexdigest()
    return value


def named_files(options: dict) -> dict[str, str]:
    """The content digest of each local file a method option names (--baseline FILE.npy), so
    that rewriting the file invalidates results computed from it."""
    return {name: file_digest(value) for name, value in sorted(options.items())
            if isinstance(value, str | Path) and not is_url(str(value))
            and os.path.isfile(value)}


def file_digest(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def input_key(path: str | Path) -> str:
    """An input's name in the manifest: absolute, so `a.png` and `./a.png` are one input."""
    text = str(path)
    return text if is_url(text) else os.path.abspath(text)


class Source:
    """An input file as it is now. Its identity (size, mtime_ns, inode) is taken when the
    object is made, before the file is read; its content digest (sha256) when first asked,
    also before the file is read for a result. A marker records both: a rerun accepts it when
    the identity is unchanged (so the file is not read again), else when the content is (so
    `touch` alone redoes nothing). Files of several examples (CSV rows, lines of text) are
    compared whole: a changed file redoes all its examples. A URL's identity is what its
    store reports (size, ETag, generation, modification time); it is never downloaded to be
    compared, so a changed identity redoes the input."""

    def __init__(self, path: Path | RemotePath):
        self.path = path
        self.taken_ns = time.time_ns()
        self.identity = self._identify()
        self._digest: str | None = None

    def _identify(self) -> dict | None:
        try:
            if isinstance(self.path, RemotePath) or is_url(str(self.path)):
                fs, inner = filesystem(str(self.path))
                info = fs.info(inner)
                return {key: str(info[key]) for key in REMOTE_KEYS if info.get(key) is not None}
            stat = os.stat(self.path)
        except Exception:  # missing or unreachable: never finished, the reader says why
            return None
        return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ino": stat.st_ino}

    def digest(self) -> str | None:
        """sha256 of the content (local files only), computed once."""
        if self._digest is None and self.identity is not None and "ino" in self.identity:
            with contextlib.suppress(OSError):
                self._digest = file_digest(self.path)
        return self._digest

    def record(self) -> dict:
        return {"identity": self.identity, "sha256": self.digest(), "taken_ns": self.taken_ns}

    def matches(self, recorded) -> bool:
        """Whether a marker's `source` is this input as it is now."""
        if not isinstance(recorded, dict) or self.identity is None:
            return False
        if recorded.get("identity") == self.identity and not racy(recorded):
            return True
        return recorded.get("sha256") is not None and self.digest() == recorded["sha256"]


def racy(recorded: dict) -> bool:
    mtime, taken = (recorded.get("identity") or {}).get("mtime_ns"), recorded.get("taken_ns")
    return mtime is not None and (not isinstance(taken, int) or mtime >= taken - RACY_NS)


class RunState:
    """The manifest and markers of one --out folder, for one job."""

    def __init__(self, out: Path | RemotePath, fingerprint: str):
        self.root = out / STATE
        self.fingerprint = fingerprint

    def stems(self, paths: Sequence[Path]) -> list[str]:
        """Output stems for `paths`: the manifest's for inputs it knows (the k-th occurrence of
        a path keeps the k-th stem given to it), fresh collision-free ones for the others."""
        with self.locked():
            known = self.read_manifest()
            stems, added = assign_stems(paths, known)
            if added:
                self.write_json(self.root / "manifest.json",
                                {"format": FORMAT, "inputs": [list(e) for e in known + added]})
        return stems

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The manifest's read-modify-write, one run at a time: an exclusive flock on
        OUT/.onnxpath/lock for a local (or shared) folder; nothing for a URL."""
        if isinstance(self.root, RemotePath) or fcntl is None:
            yield
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "lock", "ab") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def read_manifest(self) -> list[tuple[str, str]]:
        data = self.read_json(self.root / "manifest.json")
        if not data or data.get("format") != FORMAT:
            return []
        return [(key, stem) for key, stem in data.get("inputs", [])]

    def marker(self, stem: str) -> Path | RemotePath:
        return self.root / "done" / f"{stem}.json"

    @staticmethod
    def source(path: Path | RemotePath | None) -> Source | None:
        """The identity of an input file, taken now (before it is read); None for --text,
        whose content is part of the job."""
        return None if path is None else Source(path)

    def finished(self, path: Path, stem: str, source: Source | None = None) -> list[dict] | None:
        """The records of a finished input of this job, or None when it must be (re)done:
        another job, another input, changed content (`source`: the file the example comes
        from), or result files gone. When it must, the source's content digest is taken now,
        before the input is read for its results."""
        records = self.valid_records(self.read_json(self.marker(stem)), path, source)
        if records is None and source is not None:
            source.digest()
        return records

    def valid_records(self, data: dict | None, path: Path,
                      source: Source | None) -> list[dict] | None:
        if (not data or data.get("job") != self.fingerprint
                or data.get("input") != input_key(path)):
            return None
        if not (source.matches(data.get("source")) if source is not None
                else data.get("source") is None):
            return None
        records = data.get("records") or []
        for record in records:
            for key in FILE_KEYS:
                if key in record["outputs"] and not exists(record["outputs"][key]):
                    return None
        return records or None

    def mark(self, path: Path, stem: str, records: list[dict],
             source: Source | None = None) -> None:
        """Written last, after the input's files; only for inputs that fully succeeded."""
        if records and all(r["error"] is None for r in records):
            self.write_json(self.marker(stem), {
                "job": self.fingerprint, "input": input_key(path),
                "source": None if source is None else source.record(), "records": records})

    @staticmethod
    def read_json(path: Path | RemotePath) -> dict | None:
        try:
            return json.loads(path.read_bytes())
        except (OSError, ValueError):  # missing, or torn by a crash outside our atomic writes
            return None

    @staticmethod
    def write_json(path: Path | RemotePath, data: dict) -> None:
        write_atomic(path, json.dumps(data).encode())


def assign_stems(paths: Sequence[Path], known: list[tuple[str, str]]
                 ) -> tuple[list[str], list[tuple[str, str]]]:
    """(a stem per path, the manifest entries to add): known inputs keep their stems, new ones
    get fresh stems that no known input has."""
    by_key: dict[str, list[str]] = {}
    for key, stem in known:
        by_key.setdefault(key, []).append(stem)
    used = {stem for _, stem in known}
    fresh = output_stems(list(paths))
    seen: dict[str, int] = {}
    stems, added = [], []
    for path, candidate in zip(paths, fresh, strict=True):
        key = input_key(path)
        n = seen.get(key, 0)
        seen[key] = n + 1
        if n < len(by_key.get(key, [])):
            stems.append(by_key[key][n])
            continue
        stem, k = candidate, 2
        while stem in used:
            stem, k = f"{candidate}-{k}", k + 1
        used.add(stem)
        stems.append(stem)
        added.append((key, stem))
    return stems, added


def exists(text: str) -> bool:
    return RemotePath(text).exists() if is_url(text) else os.path.exists(text)
