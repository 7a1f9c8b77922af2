"""Run onnxpath from a checkout without installing it: `python cli.py attribute ...`."""

from onnxpath.cli import run

if __name__ == "__main__":
    run()
