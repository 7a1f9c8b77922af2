"""`onnxpath attribute`: method names (Captum's too), near misses, --target topK past the
classes, the pathway's effective P and flag messages."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from onnxpath.cli import jobs, main


def run_cli(capsys, *args):
    code = main(["attribute", *map(str, args)])
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines() if line.strip()]
    return code, lines, captured.err


def test_captum_names_run_onnxpaths_methods(capsys, tiny_model, sample_npy):
    code, lines, err = run_cli(capsys, tiny_model, sample_npy, "-m",
                               "saliency,IntegratedGradients,layer_gradcam", "--steps", "4")
    assert code == 0, err
    assert [line["method"] for line in lines] == ["gradient", "integrated-gradients", "gradcam"]
    assert lines[0]["params"]["absolute"] is True  # Captum's Saliency takes |gradient|
    code, plain, _ = run_cli(capsys, tiny_model, sample_npy, "--methods", "gradient", "--abs")
    assert code == 0 and plain[0]["params"] == lines[0]["params"]


@pytest.mark.parametrize("args, message", [
    (["-m", "gradiant"], "unknown method 'gradiant'; did you mean 'gradient'?"),
    (["-m", "gradient,integrated_gradient,smothgrad"], "did you mean 'smoothgrad'?"),
    (["-m", "saliency,smoothgrad"], "'saliency' is gradient with absolute=True"),
    (["--fallback", "oclusion"], "did you mean 'occlusion'?"),
    (["-t", "top99"], "--target top99 asks for 99 classes; the model has 4"),
    (["-m", "occlusion", "--window", "0"], "--window takes positive N or HxW, got '0'"),
])
def test_naming_mistakes_are_one_line_usage_errors(capsys, tiny_model, sample_npy, args,
                                                   message):
    code, lines, err = run_cli(capsys, tiny_model, sample_npy, *args)
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1 and lines == []


def test_top_k_up_to_the_class_count(capsys, tiny_model, sample_npy):
    code, lines, err = run_cli(capsys, tiny_model, sample_npy, "-t", "top4")
    assert code == 0, err
    assert sorted(line["target"] for line in lines) == [0, 1, 2, 3]


def test_pathway_params_carry_the_effective_prune_percent(capsys, tiny_model, sample_npy):
    code, lines, err = run_cli(capsys, tiny_model, sample_npy, "-m", "pathway")
    assert code == 0, err
    assert lines[0]["params"]["prune_percent"] == 85
    code, lines, err = run_cli(capsys, tiny_model, sample_npy, "-m", "pathway", "--keep", "40")
    assert code == 0, err
    assert lines[0]["params"]["prune_percent"] == 60 and lines[0]["params"]["keep"] == 40
    code, lines, err = run_cli(capsys, tiny_model, sample_npy, "-m", "pathway", "-p", "70")
    assert code == 0 and lines[0]["params"]["prune_percent"] == 70



def test_ray_timeout_reaches_the_cluster():
    """--ray-timeout is Cluster.timeout (left out: the Cluster's default)."""
    from onnxpath.run.ray import Cluster

    o = SimpleNamespace(address=None, actors="2-4", cpus_per_actor=1.0, gpus_per_actor=0.0,
                        ray_timeout=5.0)
    assert jobs.ray_cluster(o).timeout == 5.0
    assert jobs.ray_cluster(SimpleNamespace(**{**vars(o), "ray_timeout": None})).timeout == \
        Cluster().timeout
