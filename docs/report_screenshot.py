"""Make the README's report screenshot: run `onnxpath attribute ... --report`, open the page in
headless Chromium (Debian's `chromium`; websocket-client from the test extra) and save a PNG.

    python docs/report_screenshot.py                       # the demo model and its samples
    python docs/report_screenshot.py models/efficientnet_lite0.onnx models/photos/ \\
        --extra=--layers --extra=Relu,Clip --size 1280x1100  # the README's (ReLU6 = Clip)

The page is left in --work (default: a temporary folder) for a look.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnxpath.cli import main  # noqa: E402
from tests.report.browser import Browser, find_chromium  # noqa: E402


def screenshot(page: Path, png: Path, width: int, height: int) -> None:
    executable = find_chromium()
    if executable is None:
        sys.exit("chromium is missing: apt-get install chromium")
    with Browser(executable) as browser:
        browser.viewport(width, height)
        browser.open(page.resolve().as_uri())
        browser.settle(0.5)
        if browser.errors:
            sys.exit(f"the page logged errors: {browser.errors}")
        png.write_bytes(browser.screenshot())


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default=str(ROOT / "models" / "shapes_resnet.onnx"))
    parser.add_argument("inputs", nargs="*", default=[str(ROOT / "models" / "samples")])
    parser.add_argument("-m", "--methods", default="gradient,pathway,gradcam")
    parser.add_argument("--extra", action="append", default=[],
                        help="more `onnxpath attribute` arguments, one per --extra")
    parser.add_argument("--png", type=Path, default=ROOT / "docs" / "report.png")
    parser.add_argument("--size", default="1280x900", help="viewport WxH")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="onnxpath-report-"))
    page = work / "report.html"
    code = main(["attribute", args.model, *args.inputs, "-m", args.methods, "-o",
                 str(work / "out"), "--report", str(page), "-q", *args.extra])
    if code not in (0, 1):
        sys.exit(f"onnxpath attribute failed with exit code {code}")
    width, height = (int(v) for v in args.size.split("x"))
    screenshot(page, args.png, width, height)
    print(f"wrote {args.png} from {page}", file=sys.stderr)


if __name__ == "__main__":
    run()
