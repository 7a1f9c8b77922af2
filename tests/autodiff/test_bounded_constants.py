"""No rule builds a constant sized by attributes alone (issue 10, "Out of memory").

Hugging Face's EfficientNet pools its 7x7 map with AveragePool(kernel 1280, ceil_mode): the rule
once materialised np.ones((1280, 1, 1280, 1280)) in float64 (15.6 GiB). Kernels are now clipped
to the padded input and constants are made in the model's float type.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from onnxpath.autodiff import gradient_graph
from onnxpath.intake.model import normalise
from tests.oracle import check_module, check_node, export, randn

HUGE = [
    # id, x shape, attrs, torch kwargs: every kernel is far larger than its input.
    ("hf_efficientnet_1280", (2, 5, 7, 7),
     {"kernel_shape": [1280, 1280], "strides": [1280, 1280], "ceil_mode": 1},
     dict(kernel_size=1280, ceil_mode=True)),
    ("stride_smaller_than_kernel", (1, 3, 6, 5),
     {"kernel_shape": [400, 300], "strides": [500, 350], "pads": [1, 2, 1, 2], "ceil_mode": 1},
     dict(kernel_size=(400, 300), stride=(500, 350), padding=(1, 2), ceil_mode=True)),
    ("one_axis_huge", (2, 3, 8, 9),
     {"kernel_shape": [3, 999], "strides": [2, 999], "ceil_mode": 1},
     dict(kernel_size=(3, 999), stride=(2, 999), ceil_mode=True)),
]


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("shape,attrs,kwargs", [h[1:] for h in HUGE], ids=[h[0] for h in HUGE])
def test_average_pool_huge_kernel(shape, attrs, kwargs, count_include_pad):
    check_node("AveragePool", {"x": randn(*shape)},
               lambda x: F.avg_pool2d(x, count_include_pad=bool(count_include_pad), **kwargs),
               {**attrs, "count_include_pad": count_include_pad})


class EfficientNetHead(nn.Module):
    """The tail of transformers' EfficientNet, scaled down from 1280 channels to 64:
    nn.AvgPool2d(hidden_dim=1280, ceil_mode=True) over a 7x7 map, then a classifier. With 64
    channels the old rule's constant alone was 0.8 GiB in float64."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 64, 3, stride=2, padding=1)
        self.pool = nn.AvgPool2d(1280, ceil_mode=True)
        self.fc = nn.Linear(64, 4)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


def test_exported_efficientnet_head_matches_torch():
    torch.manual_seed(0)
    check_module(EfficientNetHead(), (2, 3, 14, 14))


def _gradient_model_bytes(model) -> int:
    return sum(np.prod(t.dims) * 4 for t in gradient_graph(
        normalise(model, (1, 3, 14, 14)).proto, "logits", ["x"]).graph.initializer)


def test_gradient_constants_stay_small():
    """The gradient graph's constants are bounded by the tensors, not by the 1280 kernel: the
    whole graph's initializers (weights included) stay under 64 KB."""
    torch.manual_seed(0)
    model = export(EfficientNetHead(), randn(1, 3, 14, 14))
    assert _gradient_model_bytes(model) < 64 * 1024


PROBE = textwrap.dedent("""
    import json, resource, sys
    import numpy as np, onnx
    # Address space capped: the old rule's 15.6 GiB constant fails fast instead of taking the
    # shared machine down.
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
    from onnxpath.engine.gradient import GradientEngine, one_hot
    from onnxpath.intake.model import normalise
    x = np.load(sys.argv[2])
    info = normalise(onnx.load(sys.argv[1]), x.shape)
    _, grads, _ = GradientEngine(info).gradients(x, one_hot([1], 4))
    np.save(sys.argv[3], grads[info.input_name])
    print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")


def test_peak_memory_stays_small(tmp_path):
    """Gradient of the exported head in a fresh process: peak resident memory stays well under
    1 GB (it was killed at 18 GB), and the gradient matches torch float64."""
    import onnx

    torch.manual_seed(0)
    module = EfficientNetHead().eval()
    x = randn(1, 3, 14, 14)
    onnx.save(export(module, x), tmp_path / "head.onnx")
    np.save(tmp_path / "x.npy", x)
    result = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "head.onnx"),
                             str(tmp_path / "x.npy"), str(tmp_path / "g.npy")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    peak = json.loads(result.stdout.strip().splitlines()[-1])["peak_mb"]
    assert peak < 1024, f"peak resident memory {peak:.0f} MB"
    reference = module.double()
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    reference(xt)[0, 1].backward()
    expected = xt.grad.numpy()
    got = np.load(tmp_path / "g.npy")
    assert np.max(np.abs(got - expected)) <= 1e-4 * np.max(np.abs(expected))
