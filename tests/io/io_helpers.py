"""Shared helpers for the modality tests: running the CLI in-process and reading its lines."""

from __future__ import annotations

import json


def run_cli(capsys, *args) -> tuple[int, list[dict], str]:
    from onnxpath.cli import main
    code = main(["attribute", *map(str, args), "--no-cache", "-q"])
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines() if line.strip()]
    return code, lines, captured.err
