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


def test_the_library_takes_the_clis_method_names(tiny_model):
    """Explainer.attribute resolves names as -m does: any case, Captum's; saliency is
    gradient with absolute=True unless absolute is given; results carry onnxpath's names."""
    import numpy as np

    from onnxpath.errors import UsageError
    from onnxpath.explainer import Explainer

    explainer = Explainer(tiny_model, cache=False)
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    plain = explainer.attribute(x, method="gradient")
    saliency = explainer.attribute(x, method="saliency")
    assert saliency.method == "gradient"
    np.testing.assert_allclose(saliency.maps, np.abs(plain.maps))
    signed = explainer.attribute(x, method="Saliency", absolute=False)
    np.testing.assert_allclose(signed.maps, plain.maps)
    assert explainer.attribute(x, method="IntegratedGradients", steps=4).method == \
        "integrated-gradients"
    assert explainer.attribute(x, method="Occlusion", window=8, stride=8).method == "occlusion"
    with pytest.raises(UsageError, match="did you mean 'gradient'"):
        explainer.attribute(x, method="gradiant")


@pytest.mark.parametrize("args, message", [
    (["-m", "integrated-gradients", "--steps", "0"], "--steps must be at least 1"),
    (["-m", "rise", "--rise-masks", "0"], "--rise-masks must be at least 1, got 0"),
    (["-m", "rise", "--cells", "0"], "--cells must be at least 1, got 0"),
    (["-m", "rise", "--probability", "0"], "--probability must lie in (0, 1], got 0"),
    (["-m", "smoothgrad", "--samples", "0"], "--samples must be at least 1, got 0"),
    (["-m", "occlusion", "--internal-batch-size", "0"],
     "--internal-batch-size must be at least 1, got 0"),
    (["-m", "integrated-gradients", "--internal-batch-size", "-4"],
     "--internal-batch-size must be at least 1, got -4"),
    (["-m", "smoothgrad", "--noise", "-1"], "--noise must be above 0"),
    (["-m", "smoothgrad", "--noise", "0%"], "--noise must be above 0"),
    (["-m", "lime", "--kernel-width", "0"], "--kernel-width must be above 0, got 0"),
    (["--alpha", "-0.5"], "--alpha must lie in [0, 1], got -0.5"),
    (["--threads", "0"], "--threads must be at least 1, got 0"),
    (["--sample-rate", "-8000"], "--sample-rate must be at least 1 Hz, got -8000"),
    (["--engine", "ray", "--cpus-per-actor", "0"], "--cpus-per-actor must be above 0, got 0"),
    (["--engine", "ray", "--gpus-per-actor", "-1"], "--gpus-per-actor must be 0 or more"),
])
def test_values_out_of_range_are_one_line_errors_not_clamps(capsys, tiny_model, sample_npy,
                                                            args, message):
    code, lines, err = run_cli(capsys, tiny_model, sample_npy, "-q", *args)
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1 and lines == []
