"""Keras (tf.keras 2.15) models through tf2onnx: NHWC layouts, ReLU6, in-graph Rescaling,
uint8 inputs, NASNet's Cropping2D, a Softmax head. Random init (weights=None), small inputs.

References: the same architecture rebuilt with floatx float64 and the same weights, input
gradient by tf.GradientTape; the float32 model's gradient gives float32's own error."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf2onnx

from ..fixture import directional_check, save_case

SOURCE = "tf2onnx (Keras)"
layers = tf.keras.layers
SIZE = (32, 32, 3)


def mobilenet_v2(float_input: bool, logits: bool):
    return tf.keras.applications.MobileNetV2(input_shape=SIZE, alpha=0.35, weights=None,
                                             classes=10, classifier_activation=None)


def mobilenet_v3_small(float_input: bool, logits: bool):
    return tf.keras.applications.MobileNetV3Small(input_shape=SIZE, alpha=0.75, weights=None,
                                                  classes=10, classifier_activation=None,
                                                  include_preprocessing=True, dropout_rate=0.0)


def uint8_net(float_input: bool, logits: bool):
    inputs = tf.keras.Input(SIZE, dtype=tf.keras.backend.floatx() if float_input else "uint8",
                            name="pixels")
    x = inputs if float_input else layers.Lambda(
        lambda t: tf.cast(t, tf.keras.backend.floatx()))(inputs)
    x = layers.Rescaling(1 / 127.5, offset=-1.0)(x)
    x = layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU(6.0)(x)
    x = layers.DepthwiseConv2D(3, padding="same")(x)
    x = layers.ReLU()(x)
    x = layers.Conv2D(24, 1)(x)
    x = layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inputs, layers.Dense(10, name="logits")(x))


def nasnet_cropping(float_input: bool, logits: bool):
    """NASNet's reduction-cell trick: ZeroPadding2D then Cropping2D (a Slice), with separable
    convolutions and an average pool."""
    inputs = tf.keras.Input(SIZE, name="image")
    x = layers.Conv2D(16, 3, strides=2, padding="valid")(inputs)
    x = layers.Activation("relu")(x)
    p = layers.ZeroPadding2D(((0, 1), (0, 1)))(x)
    p = layers.Cropping2D(((1, 0), (1, 0)))(p)
    a = layers.SeparableConv2D(16, 3, padding="same")(p)
    b = layers.AveragePooling2D(3, strides=1, padding="same")(x)
    x = layers.Add()([a, b])
    x = layers.Activation("relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inputs, layers.Dense(10, name="logits")(x))


def softmax_head(float_input: bool, logits: bool):
    inputs = tf.keras.Input(SIZE, name="image")
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(inputs)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(32, activation="relu")(x)
    out = layers.Dense(10, activation=None if logits else "softmax", name="probs")(x)
    return tf.keras.Model(inputs, out)


def resnet_bn(float_input: bool, logits: bool):
    inputs = tf.keras.Input(SIZE, name="image")
    x = layers.Conv2D(16, 3, padding="same", use_bias=False)(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    y = layers.Conv2D(16, 3, padding="same", use_bias=False)(x)
    y = layers.BatchNormalization()(y)
    x = layers.ReLU()(layers.Add()([x, y]))
    x = layers.Conv2D(32, 3, strides=2, padding="same")(x)  # tf2onnx's asymmetric SAME pads
    x = layers.LeakyReLU(0.2)(x)
    x = layers.GlobalMaxPooling2D()(x)
    return tf.keras.Model(inputs, layers.Dense(10, name="logits")(x))


def randomise_bn(model, seed: int, pixels: bool):
    """Random affine terms, then running statistics from one batch (momentum 0), so BatchNorm
    normalises: arbitrary statistics make deep untrained networks vanish (logits ~1e-11)."""
    rng = np.random.default_rng(seed)
    bns = [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)]
    for layer in bns:
        gamma, beta, mean, var = layer.get_weights()
        layer.set_weights([0.5 + rng.random(gamma.shape), 0.2 * rng.standard_normal(beta.shape),
                           mean, var])
        layer.momentum = 0.0
    if bns:
        shape = (16, *model.inputs[0].shape[1:])
        batch = rng.uniform(0, 255, shape) if pixels else rng.standard_normal(shape)
        model(tf.constant(batch.astype(model.inputs[0].dtype.as_numpy_dtype)), training=True)


def gradient(model, x: np.ndarray, target: int, dtype):
    t = tf.constant(x, dtype=dtype)
    with tf.GradientTape() as tape:
        tape.watch(t)
        out = model(t, training=False)
        picked = out[0, target]
    return out.numpy(), tape.gradient(picked, t).numpy()


def case(name: str, builder, covers: list[str], seed: int, uint8: bool = False,
         softmax: bool = False) -> dict:
    tf.keras.backend.set_floatx("float32")
    tf.keras.utils.set_random_seed(seed)
    model = builder(float_input=False, logits=not softmax)
    pixels = uint8 or builder is mobilenet_v3_small  # inputs 0..255
    randomise_bn(model, seed, pixels)
    weights = model.get_weights()
    tf.keras.backend.set_floatx("float64")
    model64 = builder(float_input=True, logits=True)
    model64.set_weights([w.astype(np.float64) for w in weights])
    tf.keras.backend.set_floatx("float32")
    model32 = builder(float_input=True, logits=True)
    model32.set_weights(weights)
    rng = np.random.default_rng(seed)
    if uint8:
        x = rng.integers(0, 256, (1, *SIZE), dtype=np.uint8)
    elif builder is mobilenet_v3_small:  # include_preprocessing: 0..255 pixels
        x = rng.uniform(0, 255, (1, *SIZE)).astype(np.float32)
    else:
        x = rng.standard_normal((1, *SIZE)).astype(np.float32)
    x64 = x.astype(np.float64)
    logits64 = model64(x64, training=False).numpy()
    target = int(np.argmax(logits64[0]))
    _, grad64 = gradient(model64, x64, target, tf.float64)
    _, grad32 = gradient(model32, x64.astype(np.float32), target, tf.float32)
    check = directional_check(lambda b: model64(b, training=False).numpy()[:, target], x64,
                              grad64)
    spec = [tf.TensorSpec((None, *SIZE), tf.uint8 if uint8 else tf.float32,
                          name=model.inputs[0].name.split(":")[0])]
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=13)
    return save_case(name, proto.SerializeToString(), x, source=SOURCE,
                     covers=["NHWC layout", *covers], target=target, grad64=grad64,
                     grad32=grad32, logits64=logits64,
                     reference="tf.keras float64 rebuild, GradientTape",
                     output=proto.graph.output[0].name,
                     wrt="the Cast of the uint8 input" if uint8 else None,
                     check={"directional_central_differences": check})


def build() -> list[dict]:
    return [
        case("keras_mobilenet_v2", mobilenet_v2, ["ReLU6 network (MobileNetV2)",
                                                  "BatchNorm at batch 1"], 1),
        case("keras_mobilenet_v3_small", mobilenet_v3_small,
             ["in-graph Rescaling", "hard-swish, SE, mixed ReLU"], 2),
        case("keras_uint8_nhwc", uint8_net, ["uint8 NHWC input, in-graph Cast and "
                                             "normalisation", "mixed ReLU6 and ReLU"], 3,
             uint8=True),
        case("keras_nasnet_cropping", nasnet_cropping, ["NASNet's Cropping2D Slice"], 4),
        case("keras_softmax_head", softmax_head, ["Softmax output traced back to logits"], 5,
             softmax=True),
        case("keras_resnet_same_pads", resnet_bn, ["asymmetric SAME pads", "LeakyRelu"], 6),
    ]
