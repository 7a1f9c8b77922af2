from onnxpath.cli import run

run()
