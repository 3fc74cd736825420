import numpy as np
import pytest

from pipeline.errors import ConfigError
from stages.bert import Bert, BertConfig, model_identity
from tiny_models import tiny_bert
from dummies import counts, make_items, only, run, write_manifest

TEXTS = ["the man is eating food", "a", "login password cannot app crash refund payment of the horse riding " * 3,
         "piece of bread", "the app crash", "unknown wörds 无法登录 👍"]


def direct(folder, texts, pooling="mean", max_length=16):
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder, use_safetensors=True).eval()
    enc = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**enc).last_hidden_state
    if pooling == "cls":
        return hidden[:, 0].numpy()
    mask = enc["attention_mask"].unsqueeze(-1).float()
    return ((hidden * mask).sum(1) / mask.sum(1)).numpy()


@pytest.mark.parametrize("pooling", ["mean", "cls"])
@pytest.mark.parametrize("bucketing", [True, False])
def test_stage_equals_direct_transformers_call(tmp_path, pooling, bucketing):
    folder = tiny_bert(tmp_path / "bert")
    stage = Bert(BertConfig(model=str(folder), pooling=pooling, max_length=16, model_batch_size=2, bucketing=bucketing))
    stage.ensure_ready()
    got = np.stack([o["bert"] for o in stage.process([{"text": t} for t in TEXTS])])
    want = direct(folder, TEXTS, pooling)
    assert got.shape == (len(TEXTS), 32) and got.dtype == np.float32
    assert np.abs(got - want).max() <= 1e-5


def test_model_identity_follows_the_weights(tmp_path):
    from pipeline.keys import digest_file

    a = model_identity(str(tiny_bert(tmp_path / "a", seed=0)), digest_file)
    b = model_identity(str(tiny_bert(tmp_path / "b", seed=1)), digest_file)
    assert a["files"]["model.safetensors"] != b["files"]["model.safetensors"]
    assert a["files"]["vocab.txt"] == b["files"]["vocab.txt"]
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "config.json").write_text("{}")
    (tmp_path / "c" / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ConfigError, match="no model.safetensors"):
        model_identity(str(tmp_path / "c"), digest_file)
    with pytest.raises(ConfigError, match="not installed"):
        model_identity("package:no_such_package_xyz/model", digest_file)


def test_pipeline_bert_model_change_recomputes_bert_only(tmp_path):
    data = tmp_path / "data"
    m = write_manifest(data / "m.csv", make_items(data, 0, 4))
    a, b = tiny_bert(tmp_path / "a", seed=0), tiny_bert(tmp_path / "b", seed=1)
    first = run(m, tmp_path / "w", "--set", f"bert.model={a}")
    assert counts(first, "computed")["bert"] == 4 and first["failures"] == []
    second = run(m, tmp_path / "w", "--set", f"bert.model={b}")
    assert counts(second, "computed") == only(bert=4)
    third = run(m, tmp_path / "w", "--set", f"bert.model={b}", "--set", "bert.model_batch_size=3")
    assert counts(third, "computed")["bert"] == 0


def test_packaged_minilm_is_a_real_model():
    stage = Bert(BertConfig())
    stage.ensure_ready()
    v = stage.embed(["A man is eating food.", "A man is eating a piece of bread.", "A man is riding a horse."])
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    paraphrase, unrelated = float(v[0] @ v[1]), float(v[0] @ v[2])
    assert v.shape == (3, 384)
    assert paraphrase > 0.6 and unrelated < 0.4 and paraphrase - unrelated > 0.3


def test_max_length_beyond_the_models_positions_truncates_at_the_model(tmp_path):
    """bert.max_length = 512 on a model with 128 positions: a long text is cut at 128 tokens (the same
    vector as max_length = 128), not failed as an unexpected error."""
    from tiny_models import shared_tiny_bert

    folder = shared_tiny_bert()
    long_text = "login password cannot app crash refund payment " * 100  # ~700 tokens
    at_model = Bert(BertConfig(model=str(folder), max_length=128))
    beyond = Bert(BertConfig(model=str(folder), max_length=512))
    for stage in (at_model, beyond):
        stage.ensure_ready()
    assert beyond.describe_run()["max_tokens"] == 128
    got = beyond.process([{"text": long_text}, {"text": "the app crash"}])
    want = at_model.process([{"text": long_text}, {"text": "the app crash"}])
    for g, w in zip(got, want):
        assert np.isfinite(g["bert"]).all() and np.abs(g["bert"] - w["bert"]).max() <= 1e-6
    assert np.abs(want[0]["bert"] - direct(folder, [long_text], max_length=128)[0]).max() <= 1e-5
