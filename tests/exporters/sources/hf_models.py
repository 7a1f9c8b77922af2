"""Hugging Face transformers vision models: small configs, random init (nothing downloaded),
through torch.onnx's TorchScript exporter (and the dynamo one for two of them). They carry the
patterns static shape inference gives up on: Swin's window padding and rolls, BEiT's and
DINOv2's pooler slices, MobileViT's unfold/fold reshapes, EfficientNet's 1280-wide AvgPool."""

from __future__ import annotations

import torch
import transformers as hf
from torch import nn

from .torch_common import calibrate_batchnorm, torch_case
from .torch_models import image

SOURCE = "transformers (torch export)"


class Logits(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(pixel_values=x).logits


def make(cls, config, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    config._attn_implementation = "eager"
    return calibrate_batchnorm(Logits(cls(config)), (1, 3, 32, 32), seed)


def build() -> list[dict]:
    common = dict(image_size=32, num_labels=10)
    vit = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
               patch_size=8, **common)
    models = [
        ("hf_swin", hf.SwinForImageClassification, hf.SwinConfig(
            patch_size=2, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4,
            **common), ["Swin window partition, padding, roll (dynamic shapes)"], 1),
        ("hf_beit", hf.BeitForImageClassification, hf.BeitConfig(
            use_mean_pooling=True, use_relative_position_bias=True, **vit),
         ["BEiT pooler Slice", "relative position bias Gather"], 2),
        ("hf_dinov2", hf.Dinov2ForImageClassification, hf.Dinov2Config(
            mlp_ratio=2, **{k: v for k, v in vit.items() if k != "intermediate_size"}),
         ["DINOv2 pooler Slice", "position embedding interpolation (Resize)"], 3),
        ("hf_mobilevit", hf.MobileViTForImageClassification, hf.MobileViTConfig(
            hidden_sizes=[16, 24, 32], neck_hidden_sizes=[8, 8, 16, 16, 24, 24, 32],
            num_attention_heads=2, expand_ratio=2.0, **common),
         ["MobileViT unfold/fold reshapes"], 4),
        ("hf_efficientnet", hf.EfficientNetForImageClassification, hf.EfficientNetConfig(
            width_coefficient=0.25, depth_coefficient=0.2, hidden_dim=320, **common),
         ["AveragePool with a huge ceil_mode kernel (320 x 320 on a 1 x 1 map)",
          "swish, SE blocks"], 5),
        ("hf_mobilenet_v2", hf.MobileNetV2ForImageClassification, hf.MobileNetV2Config(
            depth_multiplier=0.35, **common), ["ReLU6 network (MobileNetV2)"], 6),
        ("hf_vit", hf.ViTForImageClassification, hf.ViTConfig(**vit),
         ["ViT class token Gather"], 7),
        ("hf_convnext", hf.ConvNextForImageClassification, hf.ConvNextConfig(
            hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], num_labels=10),
         ["channels-last LayerNorm, layer scale"], 8),
        ("hf_resnet", hf.ResNetForImageClassification, hf.ResNetConfig(
            embedding_size=16, hidden_sizes=[16, 24, 32, 48], depths=[1, 1, 1, 1],
            num_labels=10), ["BatchNorm at batch 1", "residual"], 9),
    ]
    cases = []
    for name, cls, config, covers, seed in models:
        try:
            cases.append(torch_case(name, make(cls, config, seed), image(seed), covers=covers,
                                    exporter="torchscript", source=SOURCE))
        except Exception as err:  # noqa: BLE001 - report and go on with the others
            print(f"{name}: not built: {type(err).__name__}: {str(err)[:200]}")
    for name, cls, config, covers, seed in [models[6], models[1]]:
        try:
            cases.append(torch_case(name.replace("hf_", "hf_dynamo_"), make(cls, config, seed),
                                    image(seed), covers=covers, exporter="dynamo",
                                    source="transformers (torch dynamo export)"))
        except Exception as err:  # noqa: BLE001
            print(f"{name} (dynamo): not built: {type(err).__name__}: {str(err)[:200]}")
    return cases
