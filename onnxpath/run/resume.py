"""Resumable runs: what `OUT/.onnxpath/` remembers between runs into the same --out.

- `manifest.json` fixes each input's output stem the first time it is seen. `output_stems`
  depends on the whole input list, so without it, adding `b/cat.png` to a run that already
  wrote `cat.*` for `a/cat.png` would rename the earlier results.
- `done/<stem>.json`, the input's completion marker, holds its JSON records and the job's
  fingerprint. It is written after every file of that input, so a marker proves the files are
  complete; a rerun of the same job skips the input and re-emits its records.

Only inputs whose records all succeeded get a marker: a failed input is tried again. A marker
whose job differs (another method, target, model file, preprocessing, rendering) or whose files
have gone is ignored, and the input is redone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

from onnxpath.io.inputs import output_stems
from onnxpath.io.outputs import write_atomic
from onnxpath.io.storage import RemotePath, is_url
from onnxpath.version import __version__

STATE = ".onnxpath"
FORMAT = 1
FILE_KEYS = ("npy", "png", "csv", "side_by_side")  # record outputs that are files under --out


def job_fingerprint(model_digest: str, job, images: bool) -> str:
    """Everything a result depends on (the job's result fields for this modality, see
    `Job.result_fields`), not where it is written and how fast (--out, --npz, batch size,
    device, threads)."""
    fields = {"version": __version__, "model": model_digest}
    fields.update({name: identity(value) for name, value in job.result_fields(images).items()})
    text = json.dumps(fields, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def identity(value):
    """A job field as JSON: dataclasses as dicts, sequences as lists, a tokenizer as its
    JSON's digest (its repr holds a memory address)."""
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "to_str"):
        return hashlib.sha256(value.to_str().encode()).hexdigest()
    return value


def input_key(path: str | Path) -> str:
    """An input's name in the manifest: absolute, so `a.png` and `./a.png` are one input."""
    text = str(path)
    return text if is_url(text) else os.path.abspath(text)


class RunState:
    """The manifest and markers of one --out folder, for one job."""

    def __init__(self, out: Path | RemotePath, fingerprint: str):
        self.root = out / STATE
        self.fingerprint = fingerprint

    def stems(self, paths: Sequence[Path]) -> list[str]:
        """Output stems for `paths`: the manifest's for inputs it knows (the k-th occurrence of
        a path keeps the k-th stem given to it), fresh collision-free ones for the others."""
        known = self.read_manifest()
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
        if added:
            self.write_json(self.root / "manifest.json",
                            {"format": FORMAT, "inputs": [list(e) for e in known + added]})
        return stems

    def read_manifest(self) -> list[tuple[str, str]]:
        data = self.read_json(self.root / "manifest.json")
        if not data or data.get("format") != FORMAT:
            return []
        return [(key, stem) for key, stem in data.get("inputs", [])]

    def marker(self, stem: str) -> Path | RemotePath:
        return self.root / "done" / f"{stem}.json"

    def finished(self, path: Path, stem: str) -> list[dict] | None:
        """The records of a finished input of this job, or None when it must be (re)done."""
        data = self.read_json(self.marker(stem))
        if (not data or data.get("job") != self.fingerprint
                or data.get("input") != input_key(path)):
            return None
        records = data.get("records") or []
        for record in records:
            for key in FILE_KEYS:
                if key in record["outputs"] and not exists(record["outputs"][key]):
                    return None
        return records or None

    def mark(self, path: Path, stem: str, records: list[dict]) -> None:
        """Written last, after the input's files; only for inputs that fully succeeded."""
        if records and all(r["error"] is None for r in records):
            self.write_json(self.marker(stem), {"job": self.fingerprint,
                                                "input": input_key(path), "records": records})

    @staticmethod
    def read_json(path: Path | RemotePath) -> dict | None:
        try:
            return json.loads(path.read_bytes())
        except (OSError, ValueError):  # missing, or torn by a crash outside our atomic writes
            return None

    @staticmethod
    def write_json(path: Path | RemotePath, data: dict) -> None:
        write_atomic(path, json.dumps(data).encode())


def exists(text: str) -> bool:
    return RemotePath(text).exists() if is_url(text) else os.path.exists(text)
