"""Build tests/io/data/mlp_classifier.onnx: a scikit-learn MLPClassifier (ReLU, 6 features,
3 classes) trained on a seeded toy problem and converted with skl2onnx, the way users export
tabular models, plus a CSV of rows with a header.

Run in a separate environment with scikit-learn and skl2onnx (not onnxpath's test deps):

    python -m venv /tmp/skl && /tmp/skl/bin/pip install scikit-learn skl2onnx
    /tmp/skl/bin/python tests/io/make_tabular.py

The test computes its float64 reference from the committed model's own weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from skl2onnx import to_onnx
from sklearn.neural_network import MLPClassifier

HERE = Path(__file__).resolve().parent / "data"
NAMES = ["age", "income", "tenure", "visits", "score", "balance"]


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 6)).astype(np.float32)
    y = (x[:, 0] + 2 * x[:, 1] - x[:, 3] > 0).astype(int) + (x[:, 4] > 1).astype(int)
    model = MLPClassifier((10, 8), activation="relu", max_iter=400, random_state=0).fit(x, y)
    onx = to_onnx(model, x[:1], options={"zipmap": False}, target_opset=17)
    HERE.mkdir(exist_ok=True)
    (HERE / "mlp_classifier.onnx").write_bytes(onx.SerializeToString())
    rows = rng.standard_normal((4, 6))
    lines = [",".join(NAMES)] + [",".join(f"{v:.6f}" for v in row) for row in rows]
    (HERE / "customers.csv").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
