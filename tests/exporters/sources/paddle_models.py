"""PaddlePaddle 2.6 networks through paddle2onnx 1.3 (batch dims written as -1), shaped like
PaddleClas's MobileNet and PP-LCNet. References: the same network rebuilt with float64 default
dtype and the same weights, input gradient by paddle autograd."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import paddle
from paddle import nn

from ..fixture import directional_check, save_case

SOURCE = "paddle2onnx"


class ConvBN(nn.Layer):
    def __init__(self, cin, cout, k=3, stride=1, groups=1, act=None):
        super().__init__()
        self.conv = nn.Conv2D(cin, cout, k, stride, k // 2, groups=groups, bias_attr=False)
        self.bn = nn.BatchNorm2D(cout)
        self.act = act() if act else None

    def forward(self, x):
        x = self.bn(self.conv(x))
        return self.act(x) if self.act else x


class MobileNetLike(nn.Layer):
    """ReLU6 depthwise-separable blocks (PaddleClas MobileNetV1/V2 style)."""

    def __init__(self, classes=10):
        super().__init__()
        self.body = nn.Sequential(
            ConvBN(3, 8, 3, 2, act=nn.ReLU6), ConvBN(8, 8, 3, 1, groups=8, act=nn.ReLU6),
            ConvBN(8, 16, 1, act=nn.ReLU6), ConvBN(16, 16, 3, 2, groups=16, act=nn.ReLU6),
            ConvBN(16, 32, 1, act=nn.ReLU))
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        return self.fc(paddle.flatten(self.pool(self.body(x)), 1))


class SE(nn.Layer):
    def __init__(self, c):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.down = nn.Conv2D(c, c // 4, 1)
        self.up = nn.Conv2D(c // 4, c, 1)

    def forward(self, x):
        s = nn.functional.hardsigmoid(self.up(nn.functional.relu(self.down(self.pool(x)))))
        return x * s


class LCNetLike(nn.Layer):
    """PP-LCNet: hardswish depthwise blocks, an SE block, a 1x1 conv head with dropout."""

    def __init__(self, classes=10):
        super().__init__()
        self.body = nn.Sequential(
            ConvBN(3, 8, 3, 2, act=nn.Hardswish), ConvBN(8, 8, 3, 1, groups=8, act=nn.Hardswish),
            ConvBN(8, 16, 1, act=nn.Hardswish), ConvBN(16, 16, 5, 2, groups=16,
                                                       act=nn.Hardswish),
            SE(16), ConvBN(16, 32, 1, act=nn.Hardswish))
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.head = nn.Conv2D(32, 64, 1)
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = nn.functional.hardswish(self.head(self.pool(self.body(x))))
        return self.fc(paddle.flatten(x, 1))


class ResidualLeaky(nn.Layer):
    def __init__(self, classes=10):
        super().__init__()
        self.stem = ConvBN(3, 16, 3, 1, act=nn.LeakyReLU)
        self.a = nn.Sequential(ConvBN(16, 16, 3, 1, act=nn.LeakyReLU), ConvBN(16, 16))
        self.pool = nn.AvgPool2D(2, 2)
        self.fc = nn.Linear(16 * 16 * 16, classes)

    def forward(self, x):
        x = self.stem(x)
        x = nn.functional.leaky_relu(x + self.a(x))
        return self.fc(paddle.flatten(self.pool(x), 1))


def randomised_state(net: nn.Layer, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    state = {}
    for name, value in net.state_dict().items():
        v = value.numpy()
        if name.endswith("_mean"):
            v = 0.2 * rng.standard_normal(v.shape)
        elif name.endswith("_variance") or name.endswith("bn.weight"):
            v = 0.5 + rng.random(v.shape)
        elif name.endswith("bn.bias"):
            v = 0.2 * rng.standard_normal(v.shape)
        state[name] = v
    return state


def gradient(net, x: np.ndarray, target: int):
    t = paddle.to_tensor(x, stop_gradient=False)
    out = net(t)
    out[0, target].backward()
    return out.numpy(), t.grad.numpy()


def minus_one_batch(model: bytes) -> bytes:
    """Batch dims as `dim_value: -1`, as paddle2onnx before 1.0 and Paddle inference models
    converted with it write them (1.3 writes a named DynamicDimension)."""
    import onnx

    proto = onnx.load_from_string(model)
    for value in [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].Clear()
            dims[0].dim_value = -1
    return proto.SerializeToString()


def case(name: str, cls, covers: list[str], seed: int, minus_one: bool = False) -> dict:
    paddle.seed(seed)
    paddle.set_default_dtype("float32")
    net = cls()
    net.eval()
    state = randomised_state(net, seed)
    net.set_state_dict({k: v.astype(np.float32) for k, v in state.items()})
    paddle.set_default_dtype("float64")
    net64 = cls()
    net64.eval()
    net64.set_state_dict({k: v.astype(np.float64) for k, v in state.items()})
    paddle.set_default_dtype("float32")
    x = np.random.default_rng(seed).standard_normal((1, 3, 32, 32)).astype(np.float32)
    logits64, _ = gradient(net64, x.astype(np.float64), 0)
    target = int(np.argmax(logits64[0]))
    _, grad64 = gradient(net64, x.astype(np.float64), target)
    _, grad32 = gradient(net, x, target)

    def f(batch):
        with paddle.no_grad():
            return net64(paddle.to_tensor(batch)).numpy()[:, target]

    check = directional_check(f, x.astype(np.float64), grad64)
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, name)
        spec = [paddle.static.InputSpec([None, 3, 32, 32], "float32", "x")]
        paddle.onnx.export(net, prefix, input_spec=spec, opset_version=13)
        with open(prefix + ".onnx", "rb") as f:
            model = f.read()
    batch = ["-1 batch dims (rewritten from DynamicDimension)"] if minus_one else \
        ["named dynamic batch (DynamicDimension.0)"]
    if minus_one:
        model = minus_one_batch(model)
    return save_case(name, model, x, source=SOURCE, covers=[*batch, *covers],
                     target=target, grad64=grad64, grad32=grad32, logits64=logits64,
                     reference="paddle float64 rebuild, autograd",
                     check={"directional_central_differences": check})


def build() -> list[dict]:
    return [
        case("paddle_mobilenet_relu6", MobileNetLike, ["ReLU6 network", "mixed ReLU6 and ReLU"],
             1, minus_one=True),
        case("paddle_pplcnet_hardswish_se", LCNetLike, ["hard-swish, SE with hard-sigmoid"], 2),
        case("paddle_residual_leaky", ResidualLeaky, ["LeakyRelu", "residual", "AvgPool"], 3,
             minus_one=True),
    ]
