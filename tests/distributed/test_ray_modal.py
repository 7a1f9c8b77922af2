"""`--engine ray` for tables and text on a local 2-CPU Ray: the driver reads the inputs, the
actors explain the examples, and the lines and files equal the plain CLI's, also when a worker
dies (the test-only $ONNXPATH_TEST_KILL_WORKER hook, here matched against an example's name).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from distributed_inputs import comparable, result_files

from tests.io.io_helpers import run_cli

ray = pytest.importorskip("ray")

DATA = Path(__file__).resolve().parent.parent / "io" / "data"
TABLE = DATA / "mlp_classifier.onnx"
RAY = ("--engine", "ray", "--actors", "2")
METHODS = ("-m", "gradient,occlusion")


@pytest.fixture(scope="module", autouse=True)
def cluster():
    """One local Ray for the module: the CLI joins it instead of starting its own (~10 s)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture
def tables(tmp_path) -> list[Path]:
    """40 rows (three actor calls of 16 at most), a file that cannot be read, and one row."""
    rows = np.random.default_rng(0).normal(size=(40, 6))
    many = tmp_path / "in" / "rows.csv"
    many.parent.mkdir()
    many.write_text("age,income,tenure,visits,score,balance\n"
                    + "".join(",".join(f"{v:.6f}" for v in row) + "\n" for row in rows))
    bad = tmp_path / "in" / "bad.csv"
    bad.write_text("age,income,tenure,visits,score,balance\n1,2,x,4,5,6\n")
    one = tmp_path / "in" / "one.csv"
    one.write_text("age,income,tenure,visits,score,balance\n" + ",".join(["0.5"] * 6) + "\n")
    return [many, bad, one]


def test_table_rows_spread_over_actors_equal_the_plain_cli(capsys, tmp_path, tables):
    code, plain, _ = run_cli(capsys, TABLE, *tables, *METHODS, "-o", tmp_path / "plain")
    out = tmp_path / "ray"
    code_ray, lines, err = run_cli(capsys, TABLE, *tables, *METHODS, "-o", out, *RAY)
    assert code == code_ray == 1 and "Traceback" not in err  # bad.csv fails, the rest go on
    assert len(lines) == 2 * 42
    assert comparable(lines, out) == comparable(plain, tmp_path / "plain")
    assert result_files(out) == result_files(tmp_path / "plain")  # 41 rows x 2 methods x 3
    assert [line["input"] for line in lines if line["error"]] == [str(tables[1])] * 2


def test_a_worker_killed_mid_run_loses_nothing(capsys, tmp_path, tables, monkeypatch):
    _, plain, _ = run_cli(capsys, TABLE, *tables, *METHODS, "-o", tmp_path / "plain")
    monkeypatch.setenv("ONNXPATH_TEST_KILL_WORKER", f"{tables[0]}:21")
    monkeypatch.setenv("ONNXPATH_TEST_KILL_WORKER_ONCE", str(tmp_path / "killed"))
    out = tmp_path / "ray"
    code, lines, _ = run_cli(capsys, TABLE, *tables, *METHODS, "-o", out, *RAY)
    assert (tmp_path / "killed").exists() and code == 1  # a worker died; bad.csv still fails
    assert comparable(lines, out) == comparable(plain, tmp_path / "plain")  # each once, in order
    assert result_files(out) == result_files(tmp_path / "plain")


def test_a_row_that_always_kills_its_worker_is_its_error_lines(capsys, tmp_path, tables,
                                                              monkeypatch):
    _, plain, _ = run_cli(capsys, TABLE, tables[0], *METHODS)
    monkeypatch.setenv("ONNXPATH_TEST_KILL_WORKER", f"{tables[0]}:9")
    code, lines, err = run_cli(capsys, TABLE, tables[0], *METHODS, *RAY)
    assert code == 1 and "one at a time" in err
    failed = [k for k, line in enumerate(lines) if line["error"] is not None]
    assert failed == [14, 15]  # the 8th row's two methods, in their places
    assert all("worker died" in lines[k]["error"] and lines[k]["input"] == f"{tables[0]}:9"
               for k in failed)
    assert comparable([line for k, line in enumerate(lines) if k not in failed], Path("-")) == \
        comparable([line for k, line in enumerate(plain) if k not in failed], Path("-"))


def test_text_is_tokenised_on_the_driver_and_explained_on_the_actors(capsys, tmp_path,
                                                                      monkeypatch):
    pytest.importorskip("tokenizers")
    pytest.importorskip("torch")
    from tests.io.test_text import WORDS, tokenizer_file
    from tests.io.text_models import build, export

    model = export(build(), tmp_path / "bert.onnx")
    tokenizer = tokenizer_file(tmp_path / "tokenizer.json")
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("".join(f"{' '.join(WORDS[4 + (k + j) % 14] for j in range(1 + k % 5))}\n"
                               for k in range(20)))
    given = (reviews, "--tokenizer", tokenizer, "--text", "great film",
             "-m", "gradient,integrated-gradients")
    code, plain, _ = run_cli(capsys, model, *given, "-o", tmp_path / "plain")
    out = tmp_path / "ray"
    # Proof that actors did the explaining: the hook exists only in them; one dies once.
    monkeypatch.setenv("ONNXPATH_TEST_KILL_WORKER", f"{reviews}:12")
    monkeypatch.setenv("ONNXPATH_TEST_KILL_WORKER_ONCE", str(tmp_path / "killed"))
    code_ray, lines, _ = run_cli(capsys, model, *given, "-o", out, *RAY)
    assert (tmp_path / "killed").exists()
    assert code == code_ray == 0 and len(lines) == 2 * 21
    assert comparable(lines, out) == comparable(plain, tmp_path / "plain")
    assert result_files(out) == result_files(tmp_path / "plain")
    assert lines[-1]["input"] == "--text" and len(lines[-1]["tokens"]) == 4


def test_series_files_are_read_on_the_driver_and_explained_on_the_actors(capsys, tmp_path,
                                                                         monkeypatch):
    pytest.importorskip("torch")
    from tests.io.test_series import make_audio

    _, model, inputs = make_audio(tmp_path)
    given = (inputs["wav"][0], inputs["npy"][0], "-m", "gradient,integrated-gradients")
    code, plain, _ = run_cli(capsys, model, *given, "-o", tmp_path / "plain")
    out = tmp_path / "ray"
    monkeypatch.setenv("ONNXPATH_TEST_KILL_WORKER", "tone.npy")
    monkeypatch.setenv("ONNXPATH_TEST_KILL_WORKER_ONCE", str(tmp_path / "killed"))
    code_ray, lines, err = run_cli(capsys, model, *given, "-o", out, *RAY)
    assert (tmp_path / "killed").exists()  # an actor explained it (and died once)
    assert "concurrent actors" not in err  # one block: one actor, not an idle second one
    assert code == code_ray == 0 and len(lines) == 4
    assert comparable(lines, out) == comparable(plain, tmp_path / "plain")
    assert result_files(out) == result_files(tmp_path / "plain")
    assert all(len(line["series"]["values"]) == 256 for line in lines)


def test_resume_on_ray_redoes_exactly_the_rows_without_markers(capsys, tmp_path, tables):
    from onnxpath.run.resume import STATE

    out = tmp_path / "ray"
    code, lines, _ = run_cli(capsys, TABLE, *tables, *METHODS, "-o", out, *RAY)
    assert code == 1 and len(list((out / STATE / "done").iterdir())) == 41  # not bad.csv
    inodes = {p.name: p.stat().st_ino for p in out.glob("[!.]*")}
    for stem in ("rows.row0", "rows.row33"):
        (out / STATE / "done" / f"{stem}.json").unlink()
    code, again, _ = run_cli(capsys, TABLE, *tables, *METHODS, "-o", out, *RAY)
    assert code == 1 and comparable(again, out) == comparable(lines, out)
    redone = {name for name, ino in inodes.items() if (out / name).stat().st_ino != ino}
    assert redone == {f"{stem}.{method}.{kind}" for stem in ("rows.row0", "rows.row33")
                      for method in ("gradient", "occlusion") for kind in ("npy", "csv", "png")}


def test_npz_on_ray_reads_the_workers_maps_back_from_out(capsys, tmp_path, tables):
    plain_npz, ray_npz = tmp_path / "plain.npz", tmp_path / "ray.npz"
    code, plain, _ = run_cli(capsys, TABLE, *tables, *METHODS, "-o", tmp_path / "plain",
                             "--npz", plain_npz)
    code_ray, lines, _ = run_cli(capsys, TABLE, *tables, *METHODS, "-o", tmp_path / "ray",
                                 "--npz", ray_npz, *RAY)
    assert code == code_ray == 1
    with np.load(plain_npz) as expected, np.load(ray_npz) as got:
        assert len(got.files) == 2 * 41 and sorted(got.files) == sorted(expected.files)
        for key in expected.files:
            np.testing.assert_array_equal(got[key], expected[key])
    assert [line["outputs"].get("npz_key") for line in lines] == \
        [line["outputs"].get("npz_key") for line in plain]

    code, lines, err = run_cli(capsys, TABLE, *tables, "--npz", ray_npz, *RAY)
    assert code == 2 and lines == [] and "give --out" in err and "Traceback" not in err
