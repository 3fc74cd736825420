"""cnn: cleaned images -> a pooled feature vector from a keras.applications backbone.

``include_top=False`` with global average pooling and the backbone's own ``preprocess_input``.
``weights``: ``imagenet`` (Keras downloads them once to ~/.keras/models; needs network the first time),
``none`` (seeded random initialization: a fixed random feature extractor, NOT ImageNet features), or a
path to ``.keras`` / ``.h5`` / ``.weights.h5``. The backbone runs through one ``tf.function`` with a fixed
batch shape (the last batch is padded), so it is traced once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import execution_only
from pipeline.errors import ConfigError
from pipeline.outputs import Field
from pipeline.stage import Stage, register

BACKBONES = {  # name: (keras.applications attribute, module with preprocess_input)
    "MobileNetV2": ("MobileNetV2", "mobilenet_v2"),
    "EfficientNetB0": ("EfficientNetB0", "efficientnet"),
    "ResNet50": ("ResNet50", "resnet50"),
}


@dataclass
class CnnConfig:
    backbone: str = "MobileNetV2"
    # imagenet | none | a path to .keras / .h5 / .weights.h5
    weights: str = "imagenet"
    # Seed for weights = "none".
    seed: int = 0
    batch_size: int = execution_only(32)

    def validate(self) -> str | None:
        if self.backbone not in BACKBONES:
            return f"backbone must be one of {', '.join(BACKBONES)}, not {self.backbone!r}"
        if self.weights not in ("imagenet", "none") and not self.weights.endswith((".keras", ".h5")):
            return f"weights must be imagenet, none or a .keras/.h5/.weights.h5 path, not {self.weights!r}"
        return None


def weights_label(cfg: CnnConfig) -> str:
    if cfg.weights == "imagenet":
        return f"imagenet:{cfg.backbone}"
    if cfg.weights == "none":
        return f"random:{cfg.seed} (no pretrained weights)"
    return f"file:{cfg.weights}"


def build_backbone(cfg: CnnConfig):
    """The Keras backbone with the configured weights, loaded through the real paths."""
    import keras

    attr, _ = BACKBONES[cfg.backbone]
    path = cfg.weights if cfg.weights not in ("imagenet", "none") else None
    if path and path.endswith(".keras"):
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    if cfg.weights == "none":
        keras.utils.set_random_seed(cfg.seed)
    try:
        model = getattr(keras.applications, attr)(
            include_top=False, weights="imagenet" if cfg.weights == "imagenet" else None,
            input_shape=(None, None, 3), pooling="avg",
        )
    except Exception as exc:  # noqa: BLE001 - a download failure must say what to do
        raise ConfigError(
            f"cnn: cannot load {weights_label(cfg)} weights ({type(exc).__name__}: {exc}). Offline, set "
            "cnn.weights = \"none\" (random features) or a path to a weights file."
        ) from None
    if path:
        model.load_weights(path)
    return model


@register
class Cnn(Stage):
    name = "cnn"
    version = "1"
    inputs = ("clean_image",)
    Config = CnnConfig
    holds_model = True
    outputs = {"cnn": Field("float32", (None,))}  # the backbone's feature size

    def identity(self) -> dict[str, Any]:
        cfg = self.config
        if cfg.weights in ("imagenet", "none"):
            return {"weights": weights_label(cfg)}
        path = Path(cfg.weights).expanduser()
        if not path.is_file():
            raise ConfigError(f"cnn.weights: file {cfg.weights!r} not found")
        return {"weights": "file", "digest": self.digest_file(str(path))}

    def setup(self) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import importlib

        import tensorflow as tf

        self.tf = tf
        self.preprocess = importlib.import_module(f"keras.applications.{BACKBONES[self.config.backbone][1]}").preprocess_input
        self.model = build_backbone(self.config)  # in setup, so a model that cannot load stops this stage only
        self.fns: dict[int, Any] = {}

    def _fn(self, size: int):
        if size not in self.fns:
            tf, model = self.tf, self.model
            spec = tf.TensorSpec((self.batch_size, size, size, 3), tf.float32)
            self.fns[size] = tf.function(lambda x: model(x, training=False), input_signature=[spec], autograph=False)
        return self.fns[size]

    def describe_run(self) -> dict[str, Any]:
        return {"backbone": self.config.backbone, "weights": weights_label(self.config)}

    def features(self, images: np.ndarray) -> np.ndarray:
        """(n, H, W, 3) uint8 -> (n, dim) float32, batch by batch with a fixed batch shape."""
        n, size = images.shape[0], images.shape[1]
        fn = self._fn(size)
        out = []
        for start in range(0, n, self.batch_size):
            chunk = images[start : start + self.batch_size].astype(np.float32)
            real = chunk.shape[0]
            if real < self.batch_size:
                chunk = np.concatenate([chunk, np.zeros((self.batch_size - real, *chunk.shape[1:]), np.float32)])
            out.append(fn(self.preprocess(chunk)).numpy()[:real])
        return np.concatenate(out).astype(np.float32)

    def process(self, batch: list[dict]) -> list[dict]:
        out: list = [None] * len(batch)
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(batch):
            groups.setdefault(r["image"].shape, []).append(i)
        for shape, idx in groups.items():
            vectors = self.features(np.stack([batch[i]["image"] for i in idx]))
            for i, v in zip(idx, vectors):
                out[i] = {"cnn": v}
        return out
