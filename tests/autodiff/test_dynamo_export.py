"""Models as torch's dynamo (torch.export-based) exporter writes them: opset 18+, reduce axes as
inputs, attention and GELU decomposed differently. Same oracle as the TorchScript exports."""

from __future__ import annotations

import pytest
import torch

from tests.oracle import check_module, randomise_batchnorm

from .test_architectures import densenet, mobilenet_v2, resnet
from .test_architectures_modern import TinyViT, convnext, efficientnet, shufflenet

ARCHITECTURES = [
    ("resnet", resnet, (2, 3, 16, 16), True),
    ("densenet", densenet, (2, 3, 16, 16), False),
    ("mobilenet_v2", mobilenet_v2, (2, 3, 16, 16), False),
    ("shufflenet", shufflenet, (2, 3, 16, 16), False),
    ("efficientnet", efficientnet, (2, 3, 16, 16), False),
    ("convnext", convnext, (2, 3, 16, 16), False),
    ("vit", TinyViT, (2, 3, 16, 16), False),
]


@pytest.mark.parametrize("build,shape,dynamic_batch", [a[1:] for a in ARCHITECTURES],
                         ids=[a[0] for a in ARCHITECTURES])
def test_dynamo_exported_architecture(build, shape, dynamic_batch):
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = randomise_batchnorm(build(), generator)
    check_module(model, shape, classes=(3, 7), dynamic_batch=dynamic_batch, exporter="dynamo")
