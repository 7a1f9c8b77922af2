"""The sampling methods against Captum: GradientShap, ShapleyValueSampling, FeatureAblation and
FeaturePermutation, on the same torch networks (a CNN, and an MLP over table rows) with
identical parameters, the same feature mask and the very same random draws.

Captum runs on a float64 copy of the torch network; onnxpath runs the exported float32 ONNX
model. Captum's draws are reproduced as Captum makes them (numpy's and torch's global
generators, under the same seeds, in Captum's order) and handed to onnxpath in place of its
own (`monkeypatch` on the method module's draw function); Captum then runs under the same
seeds. Given the draws both sides are deterministic: Pearson >= 0.9999. Captum gives every
element of a feature the feature's whole value, onnxpath spreads it evenly over the feature's
elements (so a map summed over a feature gives its value): Captum's maps are divided by the
feature's size before comparing. The CLI tests run each method on the shipped image, table and
text models.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from captum.attr import (
    FeatureAblation,
    FeaturePermutation,
    GradientShap,
    ShapleyValueSampling,
)
from torch import nn

from onnxpath.errors import UsageError
from onnxpath.explainer import Explainer
from onnxpath.methods import feature_permutation, gradient_shap, shapley_sampling
from onnxpath.methods._features import partition
from tests.io.io_helpers import run_cli

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "models" / "examples"


class TableNet(nn.Module):
    """An MLP over 6 table columns, 3 classes."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(),
                                 nn.Linear(16, 3))

    def forward(self, x):
        return self.net(x)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    torch.manual_seed(0)
    model = TableNet().eval()
    path = tmp_path_factory.mktemp("table") / "table.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 6),), str(path), dynamo=False,
                          opset_version=17, input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
    rows = np.random.default_rng(5).standard_normal((2, 6)).astype(np.float32)
    return Explainer(path, cache=False), model.double(), rows


def cases(kind, residual, batch, table):
    """(explainer, float64 torch model, x, segments) for the CNN or the table MLP."""
    if kind == "cnn":
        explainer, model = residual
        return explainer, model, batch, "grid:4"
    explainer, model, rows = table
    return explainer, model, rows, "each"


def captum_mask(x: np.ndarray, segments: str) -> tuple[np.ndarray, torch.Tensor]:
    """onnxpath's feature ids for one example, and the same ids as Captum's feature_mask."""
    ids = partition(segments, x[0])
    return ids, torch.from_numpy(ids[None].astype(np.int64))


def spread_captum(theirs: torch.Tensor, ids: np.ndarray) -> np.ndarray:
    """Captum's map (every element the feature's whole value) spread over the feature."""
    ref = theirs.detach().numpy().astype(np.float64)
    full = np.broadcast_to(ids, ref.shape[1:])
    sizes = np.bincount(full.ravel())
    return ref / sizes[full]


def agree(name: str, ours: np.ndarray, ref: np.ndarray) -> None:
    ours = np.asarray(ours, dtype=np.float64)
    assert ours.shape == ref.shape
    pearson = np.corrcoef(ours.ravel(), ref.ravel())[0, 1]
    rel_l2 = np.linalg.norm(ours - ref) / np.linalg.norm(ref)
    print(f"\n[captum] {name:44s} pearson={pearson:.8f} rel_l2={rel_l2:.2e}")
    assert pearson >= 0.9999, f"{name}: Pearson {pearson}"
    assert rel_l2 <= 1e-4, f"{name}: relative L2 {rel_l2}"


def predicted(explainer, x) -> np.ndarray:
    return explainer.predict(x).argmax(axis=1)


# --- GradientShap ---

def captum_gradient_shap_draws(n: int, samples: int, references: int, shape: tuple,
                               stdev: float, seed: int):
    """The draws Captum's GradientShap makes under np.random.seed / torch.manual_seed(seed), in
    its order: the baseline rows (np.random.choice, NoiseTunnel's baseline expansion), the
    noise (torch.normal, NoiseTunnel), then α (np.random.uniform, InputBaselineXGradient).
    Row r is example r // samples, draw r % samples."""
    np.random.seed(seed)
    torch.manual_seed(seed)
    picks = np.asarray(np.random.choice(references, samples * n))
    noise = torch.normal(0, torch.tensor(stdev).repeat((n * samples, *shape)))
    alphas = np.random.uniform(0.0, 1.0, n * samples)
    return noise.numpy(), picks, alphas


@pytest.mark.parametrize("kind, references", [("cnn", 1), ("cnn", 3), ("table", 4)])
def test_gradient_shap_matches_captum(kind, references, residual, batch, table, monkeypatch):
    explainer, model, x, _ = cases(kind, residual, batch, table)
    samples, stdev, seed = 4, 0.2, 7
    targets = predicted(explainer, x)
    rng = np.random.default_rng(2)
    rows = rng.standard_normal((references, *x.shape[1:])).astype(np.float32) * 0.5
    noise, picks, alphas = captum_gradient_shap_draws(len(x), samples, references,
                                                      x.shape[1:], stdev, seed)

    def given(seed, shape, count, sigma):
        assert count == references
        return lambda ex, k: (noise[ex * samples + k], picks[ex * samples + k],
                              alphas[ex * samples + k])

    monkeypatch.setattr(gradient_shap, "seeded_draws", given)
    ours = explainer.attribute(x, "gradient-shap", targets, samples=samples, noise=stdev,
                               baseline=rows, internal_batch_size=3).maps
    np.random.seed(seed)
    torch.manual_seed(seed)
    theirs = GradientShap(model).attribute(
        torch.from_numpy(x).double(), torch.from_numpy(rows).double(), n_samples=samples,
        stdevs=stdev, target=torch.from_numpy(targets))
    agree(f"gradient-shap {kind} K={references}", ours, theirs.detach().numpy())


def test_gradient_shap_draws_do_not_depend_on_the_batch(residual, batch):
    """Draw k is shared by the examples, so an example alone gets the map it gets in a batch;
    and with no noise and one baseline the map is x × a gradient (zero where x is)."""
    explainer, _ = residual
    targets = predicted(explainer, batch)
    both = explainer.attribute(batch, "gradient-shap", targets, samples=3, noise=0.3).maps
    alone = explainer.attribute(batch[1:], "gradient-shap", targets[1:], samples=3,
                                noise=0.3).maps
    np.testing.assert_allclose(both[1], alone[0], rtol=1e-5, atol=1e-6)
    other = explainer.attribute(batch, "gradient-shap", targets, samples=3, noise=0.3,
                                seed=1).maps
    assert not np.allclose(both, other)


# --- ShapleyValueSampling ---

@pytest.mark.parametrize("kind, fill", [("cnn", 0.0), ("cnn", 0.3), ("table", -0.5)])
def test_shapley_sampling_matches_captum(kind, fill, residual, batch, table, monkeypatch):
    explainer, model, x, segments = cases(kind, residual, batch, table)
    ids, mask = captum_mask(x, segments)
    features, samples, seed = int(ids.max()) + 1, 3, 11
    targets = predicted(explainer, x)
    torch.manual_seed(seed)  # Captum draws torch.randperm(M) per sample
    permutations = np.stack([torch.randperm(features).numpy() for _ in range(samples)])
    monkeypatch.setattr(shapley_sampling, "random_permutations",
                        lambda count, m, seed: permutations)
    result = explainer.attribute(x, "shapley-sampling", targets, samples=samples,
                                 segments=segments, baseline=fill, internal_batch_size=16)
    torch.manual_seed(seed)
    theirs = ShapleyValueSampling(model).attribute(
        torch.from_numpy(x).double(), baselines=fill, target=torch.from_numpy(targets),
        n_samples=samples, feature_mask=mask)
    agree(f"shapley-sampling {kind} fill={fill}", result.maps, spread_captum(theirs, ids))
    # Efficiency: every permutation's credits sum to f(x) - f(baseline).
    sums = result.maps.reshape(len(x), -1).sum(axis=1)
    gaps = [e["f_x"] - e["f_baseline"] for e in result.extras]
    np.testing.assert_allclose(sums, gaps, rtol=1e-4, atol=1e-5)


# --- FeatureAblation ---

@pytest.mark.parametrize("kind, fill", [("cnn", "zero"), ("cnn", "array"), ("table", 0.7)])
def test_feature_ablation_matches_captum(kind, fill, residual, batch, table):
    explainer, model, x, segments = cases(kind, residual, batch, table)
    ids, mask = captum_mask(x, segments)
    targets = predicted(explainer, x)
    if fill == "array":  # one baseline of the example's shape, the same for both examples
        ours_fill = np.random.default_rng(4).standard_normal(x.shape[1:]).astype(np.float32)
        their_fill = torch.from_numpy(ours_fill[None]).double()
    else:
        ours_fill, their_fill = fill, 0.0 if fill == "zero" else fill
    ours = explainer.attribute(x, "feature-ablation", targets, segments=segments,
                               baseline=ours_fill, internal_batch_size=7).maps
    theirs = FeatureAblation(model).attribute(
        torch.from_numpy(x).double(), baselines=their_fill, target=torch.from_numpy(targets),
        feature_mask=mask)
    agree(f"feature-ablation {kind} fill={fill}", ours, spread_captum(theirs, ids))


# --- FeaturePermutation ---

def captum_permutations(rows: int, features: int, samples: int, seed: int) -> np.ndarray:
    """The permutations Captum's FeaturePermutation draws under torch.manual_seed(seed) over
    `samples` runs: torch.randperm(rows) per feature, in feature order, redrawn while it is
    the identity. (samples, features, rows)."""
    torch.manual_seed(seed)
    orders = np.empty((samples, features, rows), dtype=int)
    for s in range(samples):
        for j in range(features):
            order = torch.randperm(rows)
            while (order == torch.arange(rows)).all():
                order = torch.randperm(rows)
            orders[s, j] = order.numpy()
    return orders


def captum_runs(model, batch: np.ndarray, target, mask, samples: int, seed: int):
    """Captum's FeaturePermutation run `samples` times under one seed, averaged."""
    torch.manual_seed(seed)
    runs = [FeaturePermutation(model).attribute(torch.from_numpy(batch).double(), target=target,
                                                feature_mask=mask) for _ in range(samples)]
    return torch.stack(runs).mean(dim=0)


@pytest.mark.parametrize("kind, background", [("cnn", 3), ("table", 4), ("table", 1)])
def test_feature_permutation_matches_captum(kind, background, residual, batch, table,
                                            monkeypatch):
    """With background rows, example x is permuted within [x; background]: Captum's
    FeaturePermutation over that batch, read at x's row, averaged over `samples` runs."""
    explainer, model, x, segments = cases(kind, residual, batch, table)
    ids, mask = captum_mask(x, segments)
    features, samples = int(ids.max()) + 1, 3
    targets = predicted(explainer, x)
    rows = np.random.default_rng(6).standard_normal((background, *x.shape[1:]))
    rows = rows.astype(np.float32)
    queue = iter([captum_permutations(background + 1, features, samples, 20 + i)
                  for i in range(len(x))])
    monkeypatch.setattr(feature_permutation, "draw_permutations", lambda *args: next(queue))
    ours = explainer.attribute(x, "feature-permutation", targets, baseline=rows,
                               samples=samples, segments=segments, internal_batch_size=5).maps
    theirs = torch.stack([
        captum_runs(model, np.concatenate([x[i:i + 1], rows]), int(targets[i]), mask, samples,
                    20 + i)[0] for i in range(len(x))])
    agree(f"feature-permutation {kind} K={background}", ours, spread_captum(theirs, ids))


@pytest.mark.parametrize("kind", ["cnn", "table"])
def test_feature_permutation_within_a_batch_matches_captum(kind, residual, table,
                                                           monkeypatch):
    """Without background rows, a batch is permuted within itself, exactly as Captum does."""
    explainer, model, _, segments = cases(kind, residual, None, table)
    shape = (3, 32, 32) if kind == "cnn" else (6,)
    x = np.random.default_rng(8).standard_normal((4, *shape)).astype(np.float32)
    ids, mask = captum_mask(x, segments)
    features, samples = int(ids.max()) + 1, 2
    targets = predicted(explainer, x)
    orders = captum_permutations(len(x), features, samples, 31)
    monkeypatch.setattr(feature_permutation, "draw_permutations", lambda *args: orders)
    ours = explainer.attribute(x, "feature-permutation", targets, samples=samples,
                               segments=segments).maps
    theirs = captum_runs(model, x, torch.from_numpy(targets), mask, samples, 31)
    agree(f"feature-permutation {kind} within a batch of 4", ours, spread_captum(theirs, ids))


def test_feature_permutation_needs_background_rows(table):
    explainer, _, rows = table
    with pytest.raises(UsageError, match="background rows"):
        explainer.attribute(rows[:1], "feature-permutation", 0)
    with pytest.raises(UsageError, match="not one baseline"):
        explainer.attribute(rows, "feature-permutation", 0, baseline="zero")
    with pytest.raises(UsageError, match="do not fit"):
        explainer.attribute(rows, "feature-permutation", 0, baseline=np.zeros((3, 5)))


def test_captum_names_resolve():
    from onnxpath.methods import resolve_method
    assert [resolve_method(n) for n in ("GradientShap", "ShapleyValueSampling",
                                        "FeatureAblation", "FeaturePermutation")] == [
        "gradient-shap", "shapley-sampling", "feature-ablation", "feature-permutation"]


# --- the CLI on the shipped models ---

SAMPLING = "gradient-shap,shapley-sampling,feature-ablation"


def check_lines(lines, methods, per_input):
    assert [line["method"] for line in lines] == [m for _ in range(per_input)
                                                  for m in methods.split(",")]
    assert all(line["error"] is None for line in lines)


def test_cli_image(capsys, tmp_path):
    photo = ROOT / "models" / "photos" / "chelsea.jpg"
    model = ROOT / "models" / "efficientnet_lite0.onnx"
    code, lines, _ = run_cli(capsys, model, photo, "-m", SAMPLING, "--samples", "2",
                             "--segments", "grid:2", "-o", tmp_path)
    assert code == 0
    check_lines(lines, SAMPLING, 1)
    background = tmp_path / "background.npy"
    np.save(background, np.random.default_rng(0).standard_normal((2, 3, 224, 224))
            .astype(np.float32))
    code, more, _ = run_cli(capsys, model, photo, "-m", "feature-permutation", "--samples",
                            "1", "--segments", "grid:2", "--baseline", background, "-o",
                            tmp_path)
    assert code == 0 and more[0]["error"] is None
    for method in [*SAMPLING.split(","), "feature-permutation"]:
        saved = np.load(tmp_path / f"chelsea.{method}.npy")
        assert saved.shape == (3, 224, 224) and np.isfinite(saved).all()
        assert np.abs(saved).max() > 0, method
        assert (tmp_path / f"chelsea.{method}.png").is_file()
    # Without background rows, two images in one batch are permuted between themselves.
    second = ROOT / "models" / "photos" / "coffee.jpg"
    code, batched, _ = run_cli(capsys, model, photo, second, "-m", "feature-permutation",
                               "--samples", "1", "--segments", "grid:2", "-b", "2")
    assert code == 0
    check_lines(batched, "feature-permutation", 2)
    code, lines, err = run_cli(capsys, model, photo, "-m", "feature-permutation")
    assert code == 2 and not lines
    assert len(err.strip().splitlines()) == 1 and "--baseline FILE.npy" in err


def test_cli_table(capsys):
    model, rows = EXAMPLES / "churn.onnx", EXAMPLES / "customers.csv"
    code, lines, _ = run_cli(capsys, model, rows, "-m", SAMPLING)
    assert code == 0
    check_lines(lines, SAMPLING, 5)
    code, more, _ = run_cli(capsys, model, rows, "-m", "feature-permutation", "--baseline",
                            EXAMPLES / "customers.npy")
    assert code == 0
    check_lines(more, "feature-permutation", 5)
    # By construction age and the monthly charge do not matter: never the top feature.
    for line in lines + more:
        top = max(line["features"], key=lambda f: abs(f["score"]))
        assert top["name"] not in ("age", "monthly_charge"), (line["method"], top)
    code, lines, err = run_cli(capsys, model, rows, "-m", "feature-permutation")
    assert code == 2 and not lines and len(err.strip().splitlines()) == 1


def test_cli_text(capsys):
    model, reviews = EXAMPLES / "sentiment.onnx", EXAMPLES / "reviews.txt"
    tokenizer = EXAMPLES / "tokenizer.json"
    code, lines, _ = run_cli(capsys, model, reviews, "--tokenizer", tokenizer, "-m", SAMPLING,
                             "--samples", "3")
    assert code == 0
    check_lines(lines, SAMPLING, 5)
    for line in lines:
        scores = [t["score"] for t in line["tokens"]]
        assert np.isfinite(scores).all() and max(map(abs, scores)) > 0
    # Tokens have no background rows to be permuted with: refused in one line.
    code, lines, err = run_cli(capsys, model, reviews, "--tokenizer", tokenizer, "-m",
                               "feature-permutation")
    assert code == 2 and not lines
    assert len(err.strip().splitlines()) == 1 and "background rows" in err
