"""Tiny random-weight torch networks through torch.onnx's TorchScript and dynamo exporters,
each shaped like one of issue 10's failure classes."""

from __future__ import annotations

import numpy as np
import onnx
import torch
from torch import nn

from ..fixture import save_case
from .torch_common import first, randomise, references, torch_case


def conv_bn(cin, cout, k=3, stride=1, groups=1):
    return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout)]


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand, act=nn.ReLU6):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.block = nn.Sequential(*conv_bn(cin, hidden, 1), act(),
                                   *conv_bn(hidden, hidden, 3, stride, groups=hidden), act(),
                                   *conv_bn(hidden, cout, 1))

    def forward(self, x):
        return x + self.block(x) if self.use_res else self.block(x)


class MobileNetV2(nn.Module):
    """torchvision's MobileNetV2 layout, 1/8 width: ReLU6 everywhere."""

    def __init__(self, classes=10, act=nn.ReLU6, head_act=nn.ReLU6):
        super().__init__()
        self.features = nn.Sequential(
            *conv_bn(3, 8, 3, 2), act(), InvertedResidual(8, 8, 1, 1, act),
            InvertedResidual(8, 12, 2, 4, act), InvertedResidual(12, 12, 1, 4, act),
            InvertedResidual(12, 16, 2, 4, act), *conv_bn(16, 64, 1), head_act())
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, classes))
        with torch.no_grad():
            self.features[0].weight.mul_(3.0)  # so that ReLU6 saturates

    def forward(self, x):
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(
            self.features(x), 1), 1))


class SqueezeNetHead(nn.Module):
    """The zoo's SqueezeNet convention: a conv classifier, GlobalAveragePool, logits
    N x K x 1 x 1."""

    def __init__(self, classes=10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, 2), nn.ReLU(),
                                      nn.MaxPool2d(3, 2, ceil_mode=True),
                                      nn.Conv2d(16, 16, 1), nn.ReLU())
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(16, classes, 1), nn.ReLU(),
                                        nn.AdaptiveAvgPool2d(1))

    def forward(self, x):
        return self.classifier(self.features(x))


class TwoOutputs(nn.Module):
    """First output: the pooled features; second: the logits."""

    def __init__(self, classes=10):
        super().__init__()
        self.body = nn.Sequential(*conv_bn(3, 16, 3, 2), nn.ReLU(), *conv_bn(16, 32, 3, 2),
                                  nn.ReLU())
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        features = torch.flatten(nn.functional.adaptive_avg_pool2d(self.body(x), 1), 1)
        return features, self.fc(features)


class Segmenter(nn.Module):
    """FCN-shaped: N x K x H x W scores, upsampled back to the input size."""

    def __init__(self, classes=4):
        super().__init__()
        self.body = nn.Sequential(*conv_bn(3, 16, 3, 2), nn.ReLU(), *conv_bn(16, 16, 3, 1),
                                  nn.ReLU(), nn.Conv2d(16, classes, 1))

    def forward(self, x):
        return nn.functional.interpolate(self.body(x), scale_factor=2.0, mode="bilinear",
                                         align_corners=False)


def predicted_regions(module: nn.Module, x: np.ndarray):
    """A segmentation's class scores as onnxpath's default defines them: class c's logits
    summed over the pixels predicted as c (the region fixed at x, from a float64 forward)."""
    import copy

    with torch.no_grad():
        scores = copy.deepcopy(module).double()(torch.tensor(x, dtype=torch.float64))
    pred = scores.argmax(dim=1, keepdim=True)  # (1, 1, H, W)
    regions = (pred == torch.arange(scores.shape[1]).view(1, -1, 1, 1)).double()

    def select(out):
        out = first(out)
        return (out * regions.to(out.dtype)).sum(dim=(2, 3))

    return select


class EfficientNetHead(nn.Module):
    """Hugging Face EfficientNet's pooling: nn.AvgPool2d(hidden_dim=1280, ceil_mode=True) over
    the last feature map (here 8 x 8), swish activations."""

    def __init__(self, classes=10):
        super().__init__()
        self.body = nn.Sequential(*conv_bn(3, 32, 3, 2), nn.SiLU(), *conv_bn(32, 32, 3, 2),
                                  nn.SiLU())
        self.pool = nn.AvgPool2d(1280, ceil_mode=True)
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.body(x)), 1))


class ResNetBN(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(3, 16, 3, 1), nn.ReLU(), nn.MaxPool2d(2))
        self.a = nn.Sequential(*conv_bn(16, 16), nn.ReLU(), *conv_bn(16, 16))
        self.b = nn.Sequential(*conv_bn(16, 32, 3, 2), nn.ReLU(), *conv_bn(32, 32))
        self.down = nn.Sequential(*conv_bn(16, 32, 1, 2))
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.a(x))
        x = torch.relu(self.b(x) + self.down(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class LeakyPReLU(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.LeakyReLU(0.1),
                                  nn.Conv2d(16, 16, 3, 1, 1), nn.PReLU(16),
                                  nn.Conv2d(16, 24, 3, 2, 1), nn.ReLU6())
        self.fc = nn.Linear(24, classes)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_max_pool2d(self.body(x), 1), 1))


class ClassAttention(nn.Module):
    """CaiT's class-attention stage: the class token attends to the patch tokens, and the
    classifier reads token 0 (a Gather)."""

    def __init__(self, dim=32, heads=2, classes=10):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 8, 8)
        self.pos = nn.Parameter(0.02 * torch.randn(1, 16, dim))
        self.cls = nn.Parameter(0.02 * torch.randn(1, 1, dim))
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        cls = self.cls.expand(x.shape[0], -1, -1)
        u = torch.cat([cls, tokens], dim=1)
        v = self.norm1(u)
        cls = cls + self.attn(v[:, :1], v, v, need_weights=False)[0]
        cls = cls + self.mlp(self.norm2(cls))
        return self.head(cls[:, 0])


class TinyViT(nn.Module):
    """ViT with a class token, learned positions, pre-norm blocks; logits from token 0."""

    def __init__(self, dim=32, classes=10):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 8, 8)
        self.cls = nn.Parameter(0.02 * torch.randn(1, 1, dim))
        self.pos = nn.Parameter(0.02 * torch.randn(1, 17, dim))
        layer = nn.TransformerEncoderLayer(dim, 2, 64, dropout=0.0, batch_first=True,
                                           norm_first=True, activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        u = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], 1) + self.pos
        return self.head(self.norm(self.encoder(u))[:, 0])


class Uint8NHWC(nn.Module):
    """A deployed-style model: uint8 NHWC pixels in, Cast, transpose and normalise in-graph."""

    def __init__(self):
        super().__init__()
        self.net = randomise(MobileNetV2(classes=10, act=nn.ReLU), 31)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255)

    def body(self, pixels):  # float NHWC pixels, the tensor the gradient is taken against
        return self.net((pixels.permute(0, 3, 1, 2) - self.mean) / self.std)

    def forward(self, x):
        return self.body(x.float())


def unname_batch(model: bytes) -> bytes:
    """Clear the batch dims' names: dynamic, neither named nor -1."""
    proto = onnx.load_from_string(model)
    for value in [*proto.graph.input, *proto.graph.output]:
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
    return proto.SerializeToString()


def image(seed: int, shape=(1, 3, 32, 32), scale: float = 1.0) -> np.ndarray:
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def seeded(cls, seed: int, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    return randomise(cls(**kwargs), seed)


def uint8_case(exporter: str, name: str, source: str) -> dict:
    torch.manual_seed(30)
    module = Uint8NHWC().eval()
    pixels = np.random.default_rng(30).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    from .torch_common import export
    model = export(module, torch.from_numpy(pixels), exporter, ["logits"])

    class Body(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, t):
            return self.inner.body(t)

    target, logits64, grad64, grad32, reference, check = references(
        Body(module), pixels.astype(np.float64), first)
    return save_case(name, model, pixels, source=source, covers=["uint8 NHWC input, in-graph "
                     "Cast and normalisation"], target=target, grad64=grad64, grad32=grad32,
                     logits64=logits64, reference=reference, output="logits",
                     wrt="the Cast of the uint8 input (NHWC float pixels)",
                     check={"directional_central_differences": check})


def segmentation(name: str, seed: int, exporter: str, source: str) -> dict:
    module, x = seeded(Segmenter, seed), image(seed)
    return torch_case(name, module, x, exporter=exporter, source=source,
                      output_names=["scores"], select=predicted_regions(module, x),
                      covers=["segmentation output N x K x H x W"],
                      notes="reference: class c's logits summed over the pixels predicted as c")


def build(only: set[str] | None = None) -> list[dict]:
    if only:  # rebuild some cases: the segmentation ones are cheap to single out
        return [segmentation(name, seed, exporter, source) for name, seed, exporter, source in
                [("torch_segmentation_nkhw", 5, "torchscript", "torch TorchScript"),
                 ("dynamo_segmentation_nkhw", 15, "dynamo", "torch dynamo")] if name in only]
    ts, dy = "torch TorchScript", "torch dynamo"
    cases = [
        torch_case("torch_mobilenet_v2_relu6", seeded(MobileNetV2, 1), image(1),
                   exporter="torchscript", source=ts, covers=["ReLU6 network (MobileNetV2)"]),
        torch_case("torch_mixed_relu6_relu", seeded(MobileNetV2, 2, act=nn.ReLU6,
                                                      head_act=nn.ReLU), image(2),
                   exporter="torchscript", source=ts, covers=["mixed ReLU6 and ReLU"]),
        torch_case("torch_squeezenet_nk11", seeded(SqueezeNetHead, 3), image(3, (1, 3, 64, 64)),
                   exporter="torchscript", source=ts, covers=["logits N x K x 1 x 1"]),
        torch_case("torch_two_outputs_logits_second", seeded(TwoOutputs, 4), image(4),
                   exporter="torchscript", source=ts, output_names=["features", "logits"],
                   select=lambda out: out[1], output="logits",
                   covers=["two outputs, the second is the logits"]),
        segmentation("torch_segmentation_nkhw", 5, "torchscript", ts),
        torch_case("torch_efficientnet_avgpool_1280", seeded(EfficientNetHead, 6), image(6),
                   exporter="torchscript", source=ts,
                   covers=["AveragePool with a 1280 x 1280 ceil_mode kernel"]),
        torch_case("torch_unnamed_dynamic_batch", seeded(ResNetBN, 7), image(7),
                   exporter="torchscript", source=ts, model_hook=unname_batch,
                   covers=["dynamic batch neither named nor -1", "BatchNorm at batch 1"]),
        torch_case("torch_leaky_prelu_relu6", seeded(LeakyPReLU, 8), image(8),
                   exporter="torchscript", source=ts,
                   covers=["LeakyRelu, PRelu and ReLU6 pathway layers"]),
        torch_case("torch_cait_class_attention", seeded(ClassAttention, 9), image(9),
                   exporter="torchscript", source=ts,
                   covers=["CaiT-style Gather of the class token", "attention"]),
        uint8_case("torchscript", "torch_uint8_nhwc_normalised", ts),
        torch_case("dynamo_mobilenet_v2_relu6", seeded(MobileNetV2, 11), image(11),
                   exporter="dynamo", source=dy, covers=["ReLU6 network (MobileNetV2)"]),
        torch_case("dynamo_resnet_bn", seeded(ResNetBN, 12), image(12), exporter="dynamo",
                   source=dy, covers=["BatchNorm at batch 1", "residual"]),
        torch_case("dynamo_vit", seeded(TinyViT, 13), image(13), exporter="dynamo", source=dy,
                   covers=["ViT slices and gathers of the class token"]),
        torch_case("dynamo_two_outputs_logits_second", seeded(TwoOutputs, 14), image(14),
                   exporter="dynamo", source=dy, output_names=["features", "logits"],
                   select=lambda out: out[1], output="logits",
                   covers=["two outputs, the second is the logits"]),
        segmentation("dynamo_segmentation_nkhw", 15, "dynamo", dy),
    ]
    return cases
