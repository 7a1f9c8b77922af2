"""Build the exporter corpus: `python -m tests.exporters.build SOURCE...` from the repository
root, each SOURCE in the environment that has its exporter (see docs/exporters.md):

  torch, transformers, sklearn   the project's venv plus scikit-learn, skl2onnx, transformers
  keras                          a venv with tensorflow-cpu 2.15 and tf2onnx (onnx 1.15)
  paddle                         a venv with paddlepaddle 2.6 and paddle2onnx 1.3
  zoo                            the project's venv (the onnx wheel's own zoo models)
  deployed                       the project's venv plus onnxconverter-common (issue 23: int8,
                                 float16, ORT-optimized, LSTM/GRU/Einsum, conventions, folder)

Each case lands in tests/exporters/corpus/ as <name>.onnx, <name>.npz and <name>.json.
"""

from __future__ import annotations

import importlib
import sys

SOURCES = {"torch": "torch_models", "transformers": "hf_models", "sklearn": "sklearn_models",
           "keras": "keras_models", "paddle": "paddle_models", "zoo": "zoo_models",
           "deployed": "deployed_formats"}


def main(argv: list[str]) -> int:
    unknown = [s for s in argv if s not in SOURCES]
    if not argv or unknown:
        print(f"usage: python -m tests.exporters.build {{{','.join(SOURCES)}}}...",
              file=sys.stderr)
        return 2
    for source in argv:
        module = importlib.import_module(f"tests.exporters.sources.{SOURCES[source]}")
        module.build()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
