"""Print docs/exporters.md's "Tested exporters" table from the corpus, each model checked now:
`python -m tests.exporters.table`."""

from __future__ import annotations

from .checks import cases, gradient_error, load, measure


def status(name: str, meta: dict) -> str:
    if meta["kind"] != "gradient":
        return "forward-only (CLI test)"
    try:
        error, tol = gradient_error(name)
    except Exception as err:  # noqa: BLE001 - the table reports, the test asserts
        return f"fails: {type(err).__name__}: {str(err).splitlines()[0][:70]}"
    label = "1-cos " if measure(meta) == "1-cos" else ""
    return f"{'pass' if error <= tol else 'fails'}: {label}{error:.1e} (tol {tol:.1e})"


def main() -> None:
    print("| source | model | covers | reference | float32 error | onnxpath |")
    print("|---|---|---|---|---|---|")
    for name in cases():
        meta, _ = load(name)
        f32 = f"{meta['float32_error']:.1e}" if meta["float32_error"] is not None else "–"
        covers = "; ".join(meta["covers"]).replace("|", "/")
        print(f"| {meta['source']} | `{name}` | {covers} | {meta['reference']} | {f32} | "
              f"{status(name, meta)} |", flush=True)


if __name__ == "__main__":
    main()
