"""scikit-learn through skl2onnx: MLPs (standard ops: differentiable), linear and tree-ensemble
classifiers (ai.onnx.ml ops: forward-only), with and without ZipMap. References are analytic
gradients in numpy float64, written here independently of the ONNX graphs."""

from __future__ import annotations

import numpy as np
from skl2onnx import to_onnx
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier, MLPRegressor

from ..fixture import directional_check, save_case

SOURCE = "skl2onnx"
FEATURES = 8


def mlp_logits(model, x: np.ndarray, dtype) -> tuple[np.ndarray, list[np.ndarray]]:
    """The pre-output-activation scores and each hidden layer's pre-activation."""
    h = x.astype(dtype)
    pre = []
    for i, (w, b) in enumerate(zip(model.coefs_, model.intercepts_, strict=True)):
        z = h @ w.astype(dtype) + b.astype(dtype)
        if i < len(model.coefs_) - 1:
            pre.append(z)
            h = np.maximum(z, 0)
        else:
            h = z
    return h, pre


def mlp_gradient(model, x: np.ndarray, target: int, dtype) -> np.ndarray:
    """d logits[0, target] / d x: back through the layers, Relu gating on z > 0."""
    _, pre = mlp_logits(model, x, dtype)
    g = model.coefs_[-1].astype(dtype)[:, target][None]
    for w, z in zip(reversed(model.coefs_[:-1]), reversed(pre), strict=True):
        g = (g * (z > 0)) @ w.astype(dtype).T
    return g


def data(classes: int, seed: int):
    x, y = make_classification(200, FEATURES, n_informative=5, n_classes=classes,
                               random_state=seed)
    return x.astype(np.float32), y


def mlp_case(name: str, zipmap: bool, seed: int) -> dict:
    x, y = data(3, seed)
    model = MLPClassifier(hidden_layer_sizes=(16, 8), max_iter=300, random_state=seed).fit(x, y)
    onnx_model = to_onnx(model, x[:1], options={id(model): {"zipmap": zipmap}},
                         target_opset={"": 17, "ai.onnx.ml": 3})
    sample = x[:1]
    logits64, _ = mlp_logits(model, sample, np.float64)
    target = int(np.argmax(logits64[0]))
    grad64 = mlp_gradient(model, sample, target, np.float64)
    grad32 = mlp_gradient(model, sample, target, np.float32)
    check = directional_check(lambda b: mlp_logits(model, b, np.float64)[0][:, target], sample,
                              grad64)
    covers = ["skl2onnx classifier " + ("with ZipMap" if zipmap else "without ZipMap"),
              "int64 label output first", "Softmax output"]
    return save_case(name, onnx_model.SerializeToString(), sample, source=SOURCE,
                     covers=covers, target=target, grad64=grad64, grad32=grad32,
                     logits64=logits64, reference="numpy float64 analytic",
                     output="probabilities",
                     check={"directional_central_differences": check})


def regressor_case() -> dict:
    x, y = make_regression(200, FEATURES, random_state=3)
    x = x.astype(np.float32)
    model = MLPRegressor(hidden_layer_sizes=(16,), max_iter=300, random_state=3)
    model.fit(x, y / np.abs(y).max())
    onnx_model = to_onnx(model, x[:1], target_opset={"": 17, "ai.onnx.ml": 3})
    sample = x[:1]
    out64, _ = mlp_logits(model, sample, np.float64)
    grad64 = mlp_gradient(model, sample, 0, np.float64)
    grad32 = mlp_gradient(model, sample, 0, np.float32)
    check = directional_check(lambda b: mlp_logits(model, b, np.float64)[0][:, 0], sample,
                              grad64)
    return save_case("sklearn_mlp_regressor", onnx_model.SerializeToString(), sample,
                     source=SOURCE, covers=["regression: one output column"], target=0,
                     grad64=grad64, grad32=grad32, logits64=out64,
                     reference="numpy float64 analytic", output="variable",
                     check={"directional_central_differences": check})


def forward_only_case(name: str, model, zipmap: bool, covers: list[str], seed: int) -> dict:
    x, y = data(3, seed)
    model.fit(x, y)
    onnx_model = to_onnx(model, x[:1], options={id(model): {"zipmap": zipmap}},
                         target_opset={"": 17, "ai.onnx.ml": 3})
    covers = covers + ["with ZipMap" if zipmap else "without ZipMap"]
    return save_case(name, onnx_model.SerializeToString(), x[:1], source=SOURCE, covers=covers,
                     target=None, grad64=None, grad32=None, logits64=None,
                     kind="forward-only",
                     reference="none: ai.onnx.ml ops have no gradient rule; forward-only "
                     "methods must run and gradient methods refuse in one line")


def build() -> list[dict]:
    return [
        mlp_case("sklearn_mlp_zipmap", True, 1),
        mlp_case("sklearn_mlp_no_zipmap", False, 2),
        regressor_case(),
        forward_only_case("sklearn_logistic_regression_zipmap",
                          LogisticRegression(max_iter=500), True,
                          ["skl2onnx classifier (LinearClassifier)"], 4),
        forward_only_case("sklearn_random_forest_zipmap",
                          RandomForestClassifier(n_estimators=10, max_depth=4,
                                                 random_state=5), True,
                          ["tree ensemble (TreeEnsembleClassifier)"], 5),
        forward_only_case("sklearn_gradient_boosting_no_zipmap",
                          GradientBoostingClassifier(n_estimators=10, max_depth=3,
                                                     random_state=6), False,
                          ["tree ensemble (gradient boosting)"], 6),
    ]
