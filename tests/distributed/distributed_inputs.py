"""Inputs and comparisons shared by the distributed tests."""

from __future__ import annotations

from pathlib import Path

from pipeline_models import save_png


def make_inputs(folder: Path, count: int, prefix: str = "img") -> list[Path]:
    return [save_png(folder / f"{prefix}{i:03d}.png", seed=i) for i in range(count)]


def comparable(lines: list[dict], out: Path) -> list[dict]:
    """Lines without time_ms, with output paths relative to their --out."""
    return [{**{k: v for k, v in line.items() if k != "time_ms"},
             "outputs": {k: v.replace(str(out), "OUT") for k, v in line["outputs"].items()}}
            for line in lines]


def result_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("[!.]*"))}
