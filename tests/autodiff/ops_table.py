"""docs/ops.md: every ONNX op onnxpath meets, with its status and where it is handled, generated
from the tables the code itself uses (issue #23: "The README lists the ops and their status").

`python -m tests.autodiff.ops_table` rewrites docs/ops.md; test_ops_table.py checks that the file
equals what this writes, so the page cannot drift from the code. Sources, nothing typed by hand:
- the default-domain ops, the opset and which ops onnx marks Differentiable: onnx's schemas, as
  test_conformance.py reads them (`newest_opset`, `differentiable_ops`);
- the gradient rules: `onnxpath.autodiff.RULES` (the module of each rule);
- what is checked against float64 central differences: conformance_cases.py (CASES,
  UNMARKED_CASES; NOT_DIFFERENTIATED with its reasons), every case of which test_conformance.py
  runs;
- ONNX Runtime's contrib ops: its own schema registry; which of them intake rewrites into
  standard ops: the predicates intake/unfuse.py and intake/quantized.py apply to every node.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import onnx
import onnxruntime
from onnx import defs, helper
from onnxruntime.capi.onnxruntime_pybind11_state import get_all_operator_schema

from onnxpath.autodiff import RULES
from onnxpath.intake import model as intake_model
from onnxpath.intake import quantized, unfuse, unfuse_activations, unfuse_attention, unfuse_norm
from onnxpath.intake.unfuse_writer import MS
from tests.autodiff import test_conformance as conformance
from tests.autodiff.conformance_cases import CASES, NOT_DIFFERENTIATED, UNMARKED_CASES

DOC = Path(__file__).resolve().parents[2] / "docs" / "ops.md"
COMMAND = "python -m tests.autodiff.ops_table"
NON_DIFFERENTIABLE = defs.OpSchema.DifferentiationCategory.NonDifferentiable
OLD_OPSET = 16  # a rewrite applied only to older models (LayerNormalization before opset 17)
# A model below intake's opset floor is raised to it by onnx's version converter, which
# replaces the ops onnx deprecated (Scatter -> ScatterElements; Upsample -> Resize, with
# legacy.py's fixes).
UPGRADE = f"the model's opset is raised to {intake_model.OPSET_FLOOR} at intake ({{where}})"

CHECKED = "rule, checked"
RULE = "rule"
REWRITTEN = "rewritten at intake"
NO_KERNEL = "no ONNX Runtime kernel"
REFUSED = "refused"
NOT_DIFFERENTIABLE = "not differentiable"
UNMARKED_NO_RULE = "no rule"
DEPRECATED = "deprecated"
ORDER = [CHECKED, RULE, REWRITTEN, NO_KERNEL, REFUSED, UNMARKED_NO_RULE, NOT_DIFFERENTIABLE,
         DEPRECATED]
MEANING = {
    CHECKED: "a gradient rule, and a single-op case whose gradient test_conformance.py "
             "compares with float64 central differences",
    RULE: "a gradient rule without a conformance case",
    REWRITTEN: "rewritten into standard ops when the model is read; their rules differentiate it",
    NO_KERNEL: "ONNX Runtime cannot run the op; refused in one line",
    REFUSED: "deliberately without a rule; refused in one line",
    UNMARKED_NO_RULE: "no rule, and onnx leaves its inputs unmarked (neither Differentiable "
                      "nor NonDifferentiable); a gradient that must pass through it is refused "
                      "in one line",
    NOT_DIFFERENTIABLE: "onnx marks every input NonDifferentiable (mostly integer, bool, string "
                        "or shape values), or it has none: no gradient is needed through it",
    DEPRECATED: "deprecated in onnx: only an older opset has it, and that is upgraded",
}


def _where(module: str) -> str:
    """onnxpath.autodiff.rules.math -> [rules/math.py](../onnxpath/autodiff/rules/math.py);
    onnxpath.intake.x -> [intake/x.py](...)."""
    path = module.replace(".", "/") + ".py"
    parts = module.split(".")[1:]
    short = "/".join(parts[1:] if parts[0] == "autodiff" else parts) + ".py"
    return f"[{short}](../{path})"


def _node(op: str, domain: str = "") -> onnx.NodeProto:
    return helper.make_node(op, [], [], domain=domain)


def rewrite(op: str, domain: str, opset: int) -> str | None:
    """The intake module that rewrites a node of this op into standard ops, or None."""
    node = _node(op, domain)
    if quantized._quantized(node):
        return _where(quantized.HANDLERS[quantized._key(node)].__module__)
    if not unfuse._fused(node, opset):
        return None
    if domain == MS and op in unfuse_activations.ACTIVATIONS:
        return _where(unfuse_activations.__name__)
    if domain == MS and op in unfuse_attention.ATTENTION:
        return _where(unfuse_attention.__name__)
    if (domain, op) in unfuse_norm.NORMS or (domain == "" and op == "LayerNormalization"):
        return _where(unfuse_norm.__name__)
    return _where(unfuse.__name__)


def default_domain_rows(opset: int) -> list[tuple[str, str, str]]:
    """(op, status, how) for every default-domain op onnx defines at `opset`."""
    differentiable = set(conformance.differentiable_ops())
    checked = {c.op for c in CASES if c.op not in NOT_DIFFERENTIATED} | \
        {c.op for c in UNMARKED_CASES}
    names = sorted({s.name for s in defs.get_all_schemas_with_history()
                    if s.domain in ("", "ai.onnx") and s.since_version <= opset})
    rows = []
    for op in names:
        schema = defs.get_schema(op, opset, "")
        rule = _where(RULES[op].__module__) if op in RULES else None
        rewritten, old = rewrite(op, "", opset), rewrite(op, "", OLD_OPSET)
        if op in NOT_DIFFERENTIATED:
            status = NO_KERNEL if NOT_DIFFERENTIATED[op].startswith("ONNX Runtime") else REFUSED
            how = NOT_DIFFERENTIATED[op]
        elif rewritten:
            status, how = REWRITTEN, rewritten + (f"; rule: {rule}" if rule else "")
        elif schema.deprecated:
            status, how = DEPRECATED, UPGRADE.format(where=_where(intake_model.__name__))
        elif rule:
            status, how = (CHECKED if op in checked else RULE), rule
            if old:
                how += f"; below opset {OLD_OPSET + 1}: {old}"
        elif all(p.differentiation_category == NON_DIFFERENTIABLE for p in schema.inputs):
            status, how = NOT_DIFFERENTIABLE, "—"
        else:
            status, how = UNMARKED_NO_RULE, "—"
        if op in checked and op not in differentiable:
            op += " †"
        rows.append((op, status, how))
    return rows


def ort_rows(opset: int) -> list[tuple[str, str, str, str]]:
    """(domain, op, status, how) for every op ONNX Runtime registers outside onnx's own default
    domain (its contrib ops, and the default-domain ops only it defines), plus the onnx
    quantization ops intake rewrites."""
    onnx_ops = {s.name for s in defs.get_all_schemas_with_history()
                if s.domain in ("", "ai.onnx")}
    keys = {("" if s.domain in ("", "ai.onnx") else s.domain, s.name)
            for s in get_all_operator_schema()}
    keys = {(d, op) for d, op in keys if d == MS or (d == "" and op not in onnx_ops)}
    keys |= {(d, op) for d, op in quantized.HANDLERS if rewrite(op, d, opset)}
    rows = []
    for domain, op in sorted(keys):
        how = rewrite(op, domain, opset)
        label = domain or ("ai.onnx" if op in onnx_ops else "ORT-only ai.onnx")
        rows.append((label, op, REWRITTEN if how else REFUSED, how or "—"))
    return rows


def _grouped(rows, key_columns: int) -> list[tuple]:
    """Rows sharing every column but the op, as one row with the ops comma-separated."""
    groups: dict[tuple, list[str]] = defaultdict(list)
    for row in rows:
        op, rest = row[key_columns], row[:key_columns] + row[key_columns + 1:]
        groups[rest].append(op)
    return sorted(((*rest, ", ".join(ops)) for rest, ops in groups.items()),
                  key=lambda r: (ORDER.index(r[key_columns]), r[:key_columns],
                                 r[key_columns + 1:]))


def _by_domain(rows) -> str:
    domains = sorted({r[0] for r in rows}, key=lambda d: (d != MS, d))
    return ", ".join(f"{sum(r[0] == d for r in rows)} {d}" for d in domains)


def _count(rows, status: str) -> int:
    return sum(row[-2] == status for row in rows)


def render() -> str:
    opset = conformance.newest_opset()
    ops = default_domain_rows(opset)
    contrib = ort_rows(opset)
    differentiable = conformance.differentiable_ops()
    checked = [op for op in differentiable if op in {c.op for c in CASES}
               and op not in NOT_DIFFERENTIATED]
    unmarked = sorted({c.op for c in UNMARKED_CASES} - set(differentiable))
    no_kernel = sorted(op for op, why in NOT_DIFFERENTIATED.items()
                       if why.startswith("ONNX Runtime"))
    handlers = {_where(fn.__module__) for fn in quantized.HANDLERS.values()}
    rewritten = [r for r in contrib if r[2] == REWRITTEN]
    quantization = [r for r in rewritten if r[3] in handlers]
    fusions = [r for r in rewritten if r[3] not in handlers]
    onnx_version = ".".join(onnx.__version__.split(".")[:2])
    ort_version = ".".join(onnxruntime.__version__.split(".")[:2])
    lines = [
        "# ONNX ops and their status",
        "",
        f"Generated by `{COMMAND}` from the code's own tables (onnx {onnx_version}, ONNX Runtime "
        f"{ort_version}); `tests/autodiff/test_ops_table.py` fails when this page is out of date.",
        "",
        f"- **{len(checked)} of {len(differentiable)}** default-domain ops that onnx marks "
        f"Differentiable (opset {opset}, the newest ONNX Runtime {ort_version} runs) have a "
        "gradient rule checked against float64 central differences "
        "(`tests/autodiff/test_conformance.py`); so do "
        f"{len(unmarked)} ops onnx leaves unmarked (†): {', '.join(unmarked)}.",
        f"- Without an ONNX Runtime kernel (refused in one line): {', '.join(no_kernel)}; "
        f"{sum(op in RULES for op in no_kernel)} of them have their rule ready.",
        f"- Rewritten into standard ops at intake: {len(fusions)} ONNX Runtime fusions "
        f"({_by_domain(fusions)}) and {len(quantization)} quantization ops "
        f"({_by_domain(quantization)}; QDQ, QOperator and dynamic, with the straight-through "
        f"gradient): {sum(r[0] == MS for r in rewritten)} of the "
        f"{sum(r[0] == MS for r in contrib)} com.microsoft ops ONNX Runtime {ort_version} "
        "registers. Other contrib ops are refused in one line.",
        f"- All {len(ops)} default-domain ops: "
        + ", ".join(f"{_count(ops, s)} *{s}*" for s in ORDER if _count(ops, s)) + ".",
        "",
        "## Default domain (ai.onnx), opset " + str(opset),
        "",
        "| status | how | ops |",
        "|---|---|---|",
        *(f"| {status} | {how} | {names} |" for status, how, names in _grouped(ops, 0)),
        "",
        *(f"- *{s}*: {MEANING[s]}." for s in ORDER if _count(ops, s)),
        "",
        "## ONNX Runtime contrib ops and quantization ops",
        "",
        "| domain | status | how | ops |",
        "|---|---|---|---|",
        *(f"| {domain} | {status} | {how} | {names} |"
          for domain, status, how, names in _grouped(contrib, 1)),
        "",
        "A fused form a rewrite does not cover (a past state, packed QKV, …) is left as it is "
        "and refused in one line, as every op in the *refused* rows is.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    DOC.write_text(render(), encoding="utf-8")
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
