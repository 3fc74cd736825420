"""cnn.runtime: the default EfficientNet-Lite0 on ONNX Runtime gives today's TensorFlow features; its graph cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.fs import package_folder
from stages.cnn import Cnn, CnnConfig, pytorch_file

PHOTOS = ["chelsea.png", "astronaut.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg"]


def photos() -> np.ndarray:
    from stages.clean_image import CleanImageConfig, clean_image

    folder = Path(package_folder("skimage")) / "data"
    return np.stack([clean_image((folder / name).read_bytes(), CleanImageConfig()) for name in PHOTOS])


def ready(tmp_path=None, **kw) -> Cnn:
    stage = Cnn(CnnConfig(batch_size=4, **kw))  # 6 photos: a full batch and a short one
    stage.model_dir = None if tmp_path is None else tmp_path / "models"
    stage.ensure_ready()
    return stage


def test_onnx_features_equal_the_tensorflow_stage_on_real_photos(tmp_path):
    import torch

    images = photos()
    ort = ready(tmp_path)  # the default: runtime auto -> onnxruntime for Lite0 with .pth weights
    assert ort.describe_run()["runtime"] == "onnxruntime"
    got = np.stack([o["cnn"] for o in ort.process([{"image": im} for im in images])])
    want = np.stack([o["cnn"] for o in ready(runtime="tensorflow").process([{"image": im} for im in images])])
    assert got.shape == (len(PHOTOS), 1280) and got.dtype == np.float32
    # fp32 through 65 layers: TF, ORT and the PyTorch reference differ pairwise by ~1e-5 on features up to ~5
    assert np.abs(got - want).max() <= 2e-5 and np.abs(got - want).max() / np.abs(want).max() <= 1e-5
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() >= 0.9999999
    state = torch.load(str(pytorch_file(CnnConfig().weights)), map_location="cpu", weights_only=True)
    w, b = state["_fc.weight"].numpy(), state["_fc.bias"].numpy()
    assert ((got @ w.T + b).argmax(1) == (want @ w.T + b).argmax(1)).all()  # the same ImageNet class


def test_the_runtime_is_in_the_key_and_auto_follows_the_weights():
    default, tf = Cnn(CnnConfig()), Cnn(CnnConfig(runtime="tensorflow"))
    assert default.identity()["runtime"] == "onnxruntime" and default.digest() != tf.digest()
    assert Cnn(CnnConfig(runtime="onnxruntime")).digest() == default.digest()  # auto resolved: the same key
    assert Cnn(CnnConfig(runtime="onnxruntime", threads=1)).digest() == default.digest()
    assert Cnn(CnnConfig(weights="none")).describe_run()["runtime"] == "tensorflow"
    with pytest.raises(ConfigError, match="needs runtime = \"tensorflow\""):
        from pipeline.config import Config

        Config.load(None, ['cnn.runtime="onnxruntime"', 'cnn.weights="none"'])


def test_the_graph_is_cached_reused_and_rebuilt_when_damaged(tmp_path):
    images = photos()[:2]
    first = ready(tmp_path)
    want = first.features(images)
    assert first.loaded_from.startswith("built, cached ")
    files = list((tmp_path / "models" / "backbones").glob("*.onnx"))
    assert len(files) == 1 and not list(files[0].parent.glob("*.tmp*"))
    assert ready(tmp_path).loaded_from == f"cached {files[0]}"
    files[0].write_bytes(b"damaged")
    rebuilt = ready(tmp_path)
    assert "built (the cached file was unreadable" in rebuilt.loaded_from
    assert np.array_equal(rebuilt.features(images), want)
    in_memory = ready()  # no work directory (a Ray actor)
    assert in_memory.loaded_from == "built in memory" and np.array_equal(in_memory.features(images), want)
