"""EfficientNet-Lite0 in plain Keras, and the conversion of a PyTorch state dict of it into Keras weights.

``build_lite0()`` maps ``(n, H, W, 3)`` float32 images, preprocessed as ``(x - 127) / 128`` on RGB, to the
1280-d global average of the head (conv_head -> BN -> ReLU6): the vector the PyTorch reference
(``efficientnet_lite_pytorch``) gives as ``_avg_pooling(extract_features(x))``. Lite0 is EfficientNet-B0
without squeeze-excitation, with ReLU6 instead of swish, TF "same" padding, BN epsilon 1e-3.

Every Keras layer carries the name of the PyTorch module it mirrors (``_blocks.3._depthwise_conv``), so
conversion goes by name: ``read_state_dict`` loads a ``.pth`` with ``torch.load(weights_only=True)`` (no
pickle code runs), ``check_state_dict`` refuses a file whose tensor names or shapes differ from the
architecture (naming the first mismatches; never a partial load), and ``assign`` copies the tensors in
(conv kernels OIHW -> HWIO, depthwise kernels (C, 1, kh, kw) -> (kh, kw, C, 1)). The classifier ``_fc`` and
BN ``num_batches_tracked`` counters may be present and are not part of the feature extractor.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

# (repeats, kernel, stride, expand ratio, input filters, output filters): EfficientNet-B0's blocks, which
# Lite0 keeps (width and depth multipliers 1.0; stem 32 and head 1280 fixed).
BLOCKS = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]
FEATURES = 1280
BN_EPSILON = 1e-3
BN_TENSORS = ("weight", "bias", "running_mean", "running_var")  # = Keras gamma, beta, moving mean, variance
OPTIONAL = ("_fc.weight", "_fc.bias")  # the ImageNet classifier: not part of the features


def preprocess(images: np.ndarray) -> np.ndarray:
    """RGB 0..255 -> the range Lite0 was trained on."""
    import numpy as np

    return (images.astype(np.float32) - 127.0) / 128.0


def block_plan():
    """Each block as (name prefix, input filters, stride, expand ratio, kernel, output filters, residual)."""
    index = 0
    for repeats, kernel, stride, expand, filters_in, filters_out in BLOCKS:
        for r in range(repeats):
            block_in, block_stride = (filters_in, stride) if r == 0 else (filters_out, 1)
            yield f"_blocks.{index}.", block_in, block_stride, expand, kernel, filters_out, \
                block_stride == 1 and block_in == filters_out
            index += 1


def build_lite0(seed: int | None = None):
    """The Lite0 feature extractor, randomly initialized (seeded when ``seed`` is given)."""
    import keras
    from keras import layers

    if seed is not None:
        keras.utils.set_random_seed(seed)

    def conv_bn(x, filters, kernel, stride, conv_name, bn_name, relu=True, depthwise=False):
        if depthwise:
            x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=conv_name)(x)
        else:
            x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=conv_name)(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=bn_name)(x)
        return layers.ReLU(max_value=6.0, name=f"{bn_name}.relu6")(x) if relu else x

    inputs = keras.Input((None, None, 3), name="image")
    x = conv_bn(inputs, 32, 3, 2, "_conv_stem", "_bn0")
    for p, block_in, block_stride, expand, kernel, filters_out, skip in block_plan():
        h = x
        if expand != 1:
            h = conv_bn(h, block_in * expand, 1, 1, p + "_expand_conv", p + "_bn0")
        h = conv_bn(h, None, kernel, block_stride, p + "_depthwise_conv", p + "_bn1", depthwise=True)
        h = conv_bn(h, filters_out, 1, 1, p + "_project_conv", p + "_bn2", relu=False)
        x = layers.Add(name=p + "skip")([x, h]) if skip else h
    x = conv_bn(x, FEATURES, 1, 1, "_conv_head", "_bn1")
    outputs = layers.GlobalAveragePooling2D(name="_avg_pooling")(x)
    return keras.Model(inputs, outputs, name="efficientnet_lite0")


def _torch_layout(layer) -> dict[str, tuple[Any, Callable[[np.ndarray], np.ndarray]]]:
    """PyTorch tensor name -> (the Keras variable it fills, PyTorch array -> Keras array)."""
    kind = type(layer).__name__
    if kind == "Conv2D":
        return {f"{layer.name}.weight": (layer.kernel, lambda w: w.transpose(2, 3, 1, 0))}
    if kind == "DepthwiseConv2D":
        return {f"{layer.name}.weight": (layer.kernel, lambda w: w.transpose(2, 3, 0, 1))}
    if kind == "BatchNormalization":
        variables = (layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance)
        return {f"{layer.name}.{t}": (v, lambda w: w) for t, v in zip(BN_TENSORS, variables)}
    return {}


def torch_shape(variable, name: str) -> tuple[int, ...]:
    shape = tuple(variable.shape)
    if name.endswith(".weight") and len(shape) == 4:  # HWIO -> OIHW; depthwise (kh, kw, C, 1) -> (C, 1, kh, kw)
        return (shape[2], shape[3], shape[0], shape[1]) if "_depthwise_conv" in name else (shape[3], shape[2], shape[0], shape[1])
    return shape


def read_state_dict(path: Path) -> dict[str, np.ndarray]:
    """A ``.pth`` state dict as float32 numpy arrays, loaded without running pickle code."""
    import torch

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file becomes one clear config error
        raise ConfigError(f"cnn.weights: {path} is not a loadable PyTorch state dict ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"cnn.weights: {path} does not hold a state dict (a mapping of tensor names to tensors)")
    return {k: v.detach().numpy() for k, v in state.items() if not k.endswith(".num_batches_tracked")}


def check_state_dict(model, state: dict[str, np.ndarray], source: Path, show: int = 5) -> None:
    """ConfigError naming the first missing, unexpected and mis-shaped tensors; nothing when they all fit."""
    expected = {name: torch_shape(var, name) for layer in model.layers for name, (var, _) in _torch_layout(layer).items()}
    missing = [n for n in expected if n not in state]
    unexpected = [n for n in state if n not in expected and n not in OPTIONAL]
    wrong = [f"{n} {tuple(state[n].shape)} (want {expected[n]})" for n in expected if n in state and tuple(state[n].shape) != expected[n]]
    problems = [f"{what} ({len(names)}): {', '.join(names[:show])}{', ...' if len(names) > show else ''}"
                for what, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if names]
    if problems:
        raise ConfigError(f"cnn.weights: {source} is not an EfficientNet-Lite0 state dict: " + "; ".join(problems))


def assign(model, state: dict[str, np.ndarray], source: Path) -> None:
    """Copy a checked state dict into ``build_lite0()``'s variables (all of them, or raise)."""
    import numpy as np

    check_state_dict(model, state, source)
    for layer in model.layers:
        for name, (variable, to_keras) in _torch_layout(layer).items():
            variable.assign(np.ascontiguousarray(to_keras(state[name]), dtype=np.float32))
