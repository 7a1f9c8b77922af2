"""The user's guide runs as written: every shell command in the ```bash and ```sh blocks of
README.md and docs/modalities.md, and every ```python block there, is executed from a fresh
folder that links the repository's files (models/, tests/, ...), so outputs such as `out/` land in
that folder and the checkout stays clean.

Nothing in a command is rewritten: `onnxpath` on the PATH is a two-line shim running this
checkout's `python -m onnxpath`, and `python` is the interpreter running the tests. A pipe into
`jq` runs as written when jq is installed; without it (CI installs only chromium) the `| jq ...`
tail is dropped and the JSON lines are checked instead. Each command must exit 0 (or the code in
EXIT_CODES), and every stdout line of `onnxpath attribute` must be a JSON object without an
error. Parts of a command joined by `&&` are run one by one; those in SKIP are left out, each
for the reason given there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ("README.md", "docs/modalities.md")
# What the documented commands read, linked into each command's folder.
LINKED = ("models", "docs", "tests", "onnxpath", "benchmarks", "cli.py", "pyproject.toml",
          "README.md")
TIMEOUT = 600

# Commands (by how they start) that cannot run in a test, each with its reason. Keep it short:
# everything else in the guide runs.
SKIP = {
    "pip install": "installs packages: the test environment has them already, and tests must "
                   "not touch the network or the environment",
    "python -m pytest": "the test suite itself, this test included",
    "ray job submit": "needs a real Ray cluster (http://head:8265), s3:// and CUDA",
}
# Documented exit codes other than 0, by how the command starts.
EXIT_CODES: dict[str, int] = {}
CONTINUED = re.compile(r"\\\s*$")
FENCE = re.compile(r"^\s*```\s*([\w+-]*)\s*$")


def blocks(doc: str) -> list[tuple[str, int, str]]:
    """(language, first line number, text) of each fenced block."""
    found, language, start, body = [], None, 0, []
    for number, line in enumerate((ROOT / doc).read_text().splitlines(), start=1):
        fence = FENCE.match(line)
        if fence and language is None:
            language, start, body = fence.group(1).lower() or "text", number + 1, []
        elif fence:
            found.append((language, start, "\n".join(body)))
            language = None
        elif language is not None:
            body.append(line)
    return found


def shell_commands(doc: str) -> list[tuple[str, str]]:
    """(id, command) for every command of the doc's bash/sh blocks: `\\` continuations joined,
    blank lines and whole-line comments dropped."""
    commands = []
    for language, start, text in blocks(doc):
        if language not in ("bash", "sh", "shell", "console"):
            continue
        pending, first = "", start
        for offset, line in enumerate(text.splitlines()):
            if not pending:
                first = start + offset
            if CONTINUED.search(line):
                pending += CONTINUED.sub(" ", line)
                continue
            command = (pending + line).strip()
            pending = ""
            if command and not command.startswith("#"):
                commands.append((f"{doc}:{first}", command))
    return commands


def python_blocks(doc: str) -> list[tuple[str, str]]:
    return [(f"{doc}:{start}", text) for language, start, text in blocks(doc)
            if language in ("python", "py")]


def skip_reason(part: str) -> str | None:
    return next((reason for start, reason in SKIP.items() if part.startswith(start)), None)


def parts(command: str) -> list[str]:
    """The `&&`-joined parts of a command, in order."""
    return [p.strip() for p in re.split(r"\s&&\s", command) if p.strip()]


SHELL = [c for doc in DOCS for c in shell_commands(doc)]
PYTHON = [c for doc in DOCS for c in python_blocks(doc)]


@pytest.fixture(scope="module")
def shim(tmp_path_factory) -> Iterator[dict[str, str]]:
    """The environment the commands run in: `onnxpath` and `python` first on the PATH."""
    bin_dir = tmp_path_factory.mktemp("bin")
    (bin_dir / "onnxpath").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m onnxpath "$@"\n')
    (bin_dir / "onnxpath").chmod(0o755)
    if not Path(sys.executable).with_name("python").exists():
        (bin_dir / "python").symlink_to(sys.executable)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PATH"] = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent),
                                   env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    # A local Ray's socket paths must stay short, and a private folder keeps runs apart.
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp" if Path("/tmp").is_dir() else None)
    env["RAY_TMPDIR"] = ray_tmp
    env.pop("CUDA_VISIBLE_DEVICES", None)
    yield env
    shutil.rmtree(ray_tmp, ignore_errors=True)


def workdir(tmp_path: Path) -> Path:
    for name in LINKED:
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


def without_jq(command: str) -> str:
    """The command without its `| jq ...` tail when jq is not installed."""
    if shutil.which("jq") is None:
        return re.sub(r"\s*\|\s*jq\b.*$", "", command)
    return command


def check_json_lines(command: str, stdout: str) -> None:
    attribute = re.search(r"\bonnxpath\s+attribute\b", command) and "| jq" not in command
    for line in stdout.splitlines():
        if not line.strip():
            continue
        if attribute or line.lstrip().startswith("{"):
            record = json.loads(line)
            if attribute:
                assert isinstance(record, dict) and record.get("error") is None, line


@pytest.mark.parametrize(("where", "command"), SHELL, ids=[w for w, _ in SHELL])
def test_shell_command(where, command, shim, tmp_path):
    folder = workdir(tmp_path)
    ran = 0
    for part in parts(command):
        if skip_reason(part):
            continue
        part = without_jq(part)
        done = subprocess.run(["bash", "-c", part], cwd=folder, env=shim, capture_output=True,
                              text=True, timeout=TIMEOUT)
        expected = next((code for start, code in EXIT_CODES.items() if part.startswith(start)),
                        0)
        assert done.returncode == expected, (
            f"{where}: `{part}` exited {done.returncode}\n{done.stderr[-3000:]}")
        check_json_lines(part, done.stdout)
        ran += 1
    if not ran:
        pytest.skip("; ".join(skip_reason(p) for p in parts(command)))


@pytest.mark.parametrize(("where", "code"), PYTHON, ids=[w for w, _ in PYTHON])
def test_python_block(where, code, shim, tmp_path):
    done = subprocess.run([sys.executable, "-c", code], cwd=workdir(tmp_path), env=shim,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, f"{where}:\n{done.stderr[-3000:]}"


def test_the_guide_has_commands():
    """The extraction finds the blocks (a changed fence style would otherwise pass silently),
    and every entry of SKIP and EXIT_CODES still matches a command (the lists stay short)."""
    assert len(SHELL) >= 10 and len(PYTHON) >= 2
    assert all(reason for reason in SKIP.values())
    every_part = [part for _, command in SHELL for part in parts(command)]
    unused = [start for start in [*SKIP, *EXIT_CODES]
              if not any(part.startswith(start) for part in every_part)]
    assert not unused, f"entries matching no command of {DOCS}: {unused}"


def test_no_reference_outside_the_repository():
    """The guide names nothing outside the repository: no links above its root, nothing about
    how or with which tools the project was developed."""
    pattern = re.compile(r"\.\./shared|search tool|subagent", re.IGNORECASE)
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    found = [f"{page.relative_to(ROOT)}:{number}: {line.strip()}" for page in pages
             for number, line in enumerate(page.read_text().splitlines(), start=1)
             if pattern.search(line)]
    assert not found, "\n".join(found)


def test_local_links_resolve():
    """Every relative link of README.md and docs/*.md names a file of the repository."""
    link = re.compile(r"\]\(([^)\s]+)\)")
    missing = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for number, line in enumerate(page.read_text().splitlines(), start=1):
            for target in link.findall(line):
                if re.match(r"[a-z]+:", target) or target.startswith("#"):
                    continue
                path = (page.parent / target.split("#")[0]).resolve()
                if not path.is_relative_to(ROOT) or not path.exists():
                    missing.append(f"{page.relative_to(ROOT)}:{number}: {target}")
    assert not missing, "\n".join(missing)
