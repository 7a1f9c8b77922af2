"""docs/ops.md is what tests/autodiff/ops_table.py generates from the code's own tables (the
rule table, the conformance cases, the intake rewrites), so the page cannot drift from the code.
Reads tables only; runs no conformance case."""

from __future__ import annotations

import onnx
import onnxruntime

from tests.autodiff.ops_table import COMMAND, DOC, render


def test_docs_ops_md_is_up_to_date():
    expected = render()
    written = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
    changed = [line for line in expected.splitlines() if line not in written.splitlines()]
    print(f"{DOC.name}: {len(expected.splitlines())} lines, {len(changed)} changed")
    assert written == expected, (
        f"{DOC} is out of date (onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__} "
        f"installed); regenerate it with `{COMMAND}`. First changed lines: {changed[:3]}")
