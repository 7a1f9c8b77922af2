"""Export a torch module (TorchScript or dynamo exporter) and compute its corpus references:
the input gradient of one logit by torch autograd on a float64 copy, the same in float32 (the
float32 error the test allows), and a directional central-difference check of the float64 one.
Where that check fails (the float64 reference is doubtful), full central differences replace it.
"""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ..fixture import central_differences, directional_check, save_case

Select = Callable[[object], torch.Tensor]  # module output -> (N, K) logits


def randomise(module: nn.Module, seed: int) -> nn.Module:
    """Seeded weights are the caller's; BatchNorm gets non-trivial statistics here."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(0.2 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))
                if m.weight is not None:
                    m.weight.copy_(0.5 + torch.rand(c, generator=g))
                    m.bias.copy_(0.2 * torch.randn(c, generator=g))
    return module.eval()


def export(module: nn.Module, x: torch.Tensor, exporter: str, output_names: list[str],
           dynamic_batch: bool = True, opset: int = 17) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            dims = ({0: torch.export.Dim("batch", min=1, max=64)},) if dynamic_batch else None
            program = torch.onnx.export(module, (x,), dynamo=True, dynamic_shapes=dims,
                                        input_names=["x"], output_names=output_names,
                                        verbose=False)
            return program.model_proto.SerializeToString()
        buffer = io.BytesIO()
        axes = ({name: {0: "batch"} for name in ["x", *output_names]} if dynamic_batch
                else None)
        torch.onnx.export(module, (x,), buffer, dynamo=False, opset_version=opset,
                          input_names=["x"], output_names=output_names, dynamic_axes=axes)
        return buffer.getvalue()


@contextlib.contextmanager
def true_float64_softmax():
    """Hugging Face's eager attention computes softmax in float32 (`dtype=torch.float32`) even
    in a float64 model, which would leave the "float64" reference float32-accurate. Drop that
    cast while references are computed."""
    original = nn.functional.softmax

    def softmax(t, dim=None, _stacklevel=3, dtype=None):
        keep = dtype if dtype is not None and t.dtype != torch.float64 else None
        return original(t, dim=dim, dtype=keep)

    nn.functional.softmax = softmax
    try:
        yield
    finally:
        nn.functional.softmax = original


def calibrate_batchnorm(module: nn.Module, shape: tuple[int, ...], seed: int) -> nn.Module:
    """Running statistics from a random batch, so BatchNorm normalises (small-init networks
    with arbitrary statistics saturate or die)."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return module.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    module.train()
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed)
        module(torch.randn((16, *shape[1:]), generator=g))
    return module.eval()


def first(out) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def references(module: nn.Module, x: np.ndarray, select: Select, target: int | None = None,
               wrt: Callable[[torch.Tensor], torch.Tensor] | None = None):
    """(target, logits64, grad64, grad32, reference name, check error). `wrt` maps the input
    to the tensor whose gradient is wanted (uint8 models: the cast image); the module then
    takes that tensor instead of `x`."""
    def logits_of(model, t):
        return select(model(t)).reshape(t.shape[0], -1)

    def gradient(model, dtype):
        t = torch.tensor(np.asarray(x, np.float64), dtype=dtype, requires_grad=True)
        logits = logits_of(model, t)
        return logits, torch.autograd.grad(logits[0, chosen], t)[0].numpy()

    m64 = copy.deepcopy(module).double().eval()
    with torch.no_grad():
        logits64 = logits_of(m64, torch.tensor(np.asarray(x, np.float64))).numpy()
    chosen = int(np.argmax(logits64[0])) if target is None else target
    _, grad64 = gradient(m64, torch.float64)
    _, grad32 = gradient(copy.deepcopy(module).float().eval(), torch.float32)

    def f(batch):
        with torch.no_grad():
            return logits_of(m64, torch.tensor(batch))[:, chosen].numpy()

    check = directional_check(f, x, grad64)
    reference = "torch float64 autograd"
    if check > 1e-4:
        # The float64 autograd reference is doubtful (e.g. torch's BatchNorm backward at batch
        # 1): central differences in float64 replace it.
        cd = central_differences(f, x)
        print(f"  directional check {check:.2e}: central differences used "
              f"(autograd differs by {np.abs(cd - grad64).max() / np.abs(cd).max():.2e})")
        grad64, reference = cd, "float64 central differences (torch forward)"
    return chosen, logits64, grad64, grad32, reference, check


def torch_case(name: str, module: nn.Module, x: np.ndarray, *, exporter: str, covers: list[str],
               source: str, output_names: list[str] = ("logits",), select: Select = first,
               output: str | None = None, dynamic_batch: bool = True, notes: str = "",
               model_hook: Callable[[bytes], bytes] | None = None, opset: int = 17) -> dict:
    module = module.eval()
    model = export(module, torch.from_numpy(np.asarray(x, np.float32)), exporter,
                   list(output_names), dynamic_batch, opset)
    if model_hook is not None:
        model = model_hook(model)
    with true_float64_softmax():
        target, logits64, grad64, grad32, reference, check = references(module, x, select)
    return save_case(name, model, np.asarray(x, np.float32), source=source, covers=covers,
                     target=target, grad64=grad64, grad32=grad32, logits64=logits64,
                     reference=reference, output=output or output_names[0], notes=notes,
                     check={"directional_central_differences": check})
