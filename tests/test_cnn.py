import numpy as np
import pytest

from pipeline.errors import ConfigError
from stages.cnn import Cnn, CnnConfig


def images(n, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("suffix", [".keras", ".weights.h5"])
def test_stage_equals_direct_keras_call(tmp_path, suffix):
    from keras.applications.mobilenet_v2 import preprocess_input

    from tiny_models import tiny_cnn

    path = tmp_path / f"tiny{suffix}"
    # A whole saved model may be any backbone; a weights file must match the configured architecture
    # (MobileNetV2, alpha 1.0), which the stage builds before loading the weights into it.
    model = tiny_cnn(path, alpha=0.35 if suffix == ".keras" else 1.0)
    stage = Cnn(CnnConfig(backbone="MobileNetV2", weights=str(path), batch_size=4))
    stage.ensure_ready()
    x = images(6)  # 6 = one full batch of 4 + a padded batch
    got = np.stack([o["cnn"] for o in stage.process([{"image": im} for im in x])])
    want = model(preprocess_input(x.astype(np.float32)), training=False).numpy()
    assert got.shape == want.shape and got.dtype == np.float32
    assert np.abs(got - want).max() <= 1e-5
    assert stage.fns[32].experimental_get_tracing_count() == 1  # fixed batch shape: traced once


def test_random_weights_are_seeded_and_labelled():
    a = Cnn(CnnConfig(weights="none", seed=5, batch_size=2))
    a.ensure_ready()
    x = images(2)
    first = a.features(x)
    b = Cnn(CnnConfig(weights="none", seed=5, batch_size=2))
    b.ensure_ready()
    np.testing.assert_array_equal(first, b.features(x))  # same seed: the same features, bit for bit
    c = Cnn(CnnConfig(weights="none", seed=6, batch_size=2))
    c.ensure_ready()
    other = c.features(x)
    assert other.shape == first.shape and np.abs(other - first).max() > 1e-3 * np.abs(first).max()  # another seed: others
    assert a.digest() == b.digest() != c.digest()  # and other cache keys
    assert "random:5" in a.describe_run()["weights"] and "no pretrained" in a.describe_run()["weights"]


def test_weights_identity_and_errors(tmp_path):
    path = tmp_path / "w.weights.h5"
    path.write_bytes(b"one")
    k1 = Cnn(CnnConfig(backbone="MobileNetV2", weights=str(path))).digest()
    path.write_bytes(b"two")
    assert Cnn(CnnConfig(backbone="MobileNetV2", weights=str(path))).digest() != k1
    assert Cnn(CnnConfig(backbone="MobileNetV2", weights="imagenet")).identity() == {"weights": "imagenet:MobileNetV2"}
    with pytest.raises(ConfigError, match="not found"):
        Cnn(CnnConfig(weights=str(tmp_path / "nope.keras"))).identity()


def test_a_backbone_that_cannot_load_is_a_stage_error_and_other_stages_run(tmp_path):
    from dummies import counts, make_items, run, write_manifest

    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"not a keras archive")
    m = write_manifest(tmp_path / "data" / "m.csv", make_items(tmp_path / "data", 0, 2))
    report = run(m, tmp_path / "w", "--set", f"cnn.weights={bad}", "--set", "bert.model_batch_size=2", expect=3)
    assert [e["stage"] for e in report["stage_errors"]] == ["cnn"]
    assert counts(report, "computed")["mfcc"] == 2 and counts(report, "computed")["cnn"] == 0
