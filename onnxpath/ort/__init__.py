"""ONNX Runtime, the lowest layer: sessions and execution providers (`sessions`), and models
whose weights live in external data files (`external`). Imports nothing of onnxpath but
`errors`."""
