import pytest

from pipeline.errors import EmptyText, TextDecodeError
from stages.clean_text import CleanText, CleanTextConfig, clean


def stage(**kw):
    return CleanText(CleanTextConfig(**kw))


def test_html_entities_tags_and_whitespace():
    cfg = CleanTextConfig()
    assert clean("<p>Fish &amp; chips</p>\t\t<br/>now&nbsp;please  ", cfg) == "Fish & chips now please"
    assert clean("<script>alert(1)</script>hi<!-- x -->", cfg) == "hi"
    assert clean("a < b and c > d", cfg) == "a < b and c > d"  # not tags


def test_nfkc_invisible_and_control_characters():
    cfg = CleanTextConfig()
    assert clean("Ｈｅｌｌｏ\u200b wor\u00adld\ufeff", CleanTextConfig(width_forms="fold")) == "Hello world"
    assert clean("Ｈｅｌｌｏ\u200b wor\u00adld\ufeff", cfg) == "Ｈｅｌｌｏ world"
    assert clean("bell\x07 and\x00null", cfg) == "bell and null"
    assert clean("line1\r\n\r\nline2\u3000end", cfg) == "line1 line2 end"


def test_cjk_rtl_and_emoji_survive():
    cfg = CleanTextConfig()
    for text in ["无法登录我的账户", "مرحبا بالعالم", "שלום עולם", "family 👨‍👩‍👧 ok 👍🏽", "می‌خواهم"]:
        assert clean(text, cfg) == text


def test_width_forms_kept_by_default_folded_on_request():
    keep, fold = CleanTextConfig(), CleanTextConfig(width_forms="fold")
    for text in ["，！？：；（）【】", "Ｈｅｌｌｏ ＡＢＣ", "０１２３４５", "ｶﾀｶﾅ", "￥１００"]:
        assert clean(text, keep) == text
        assert clean(text, fold) != text
    assert clean("，！Ｈｅｌｌｏ１２３", fold) == ",!Hello123"
    assert clean("付款失败了，但是钱已经扣了！", fold) == "付款失败了,但是钱已经扣了!"
    # the ideographic space (a width form) still becomes a plain space when whitespace is collapsed
    assert clean("你好\u3000\u3000谢谢", keep) == clean("你好\u3000谢谢", fold) == "你好 谢谢"


def test_keep_still_folds_everything_else():
    keep = CleanTextConfig()
    assert clean("ﬁnal ﬂow", keep) == "final flow"  # ligatures
    assert clean("x² ½ Ⅻ ㎏", keep) == "x2 1⁄2 XII kg"
    assert clean("ﬁ，Ｈｉ", keep) == "fi，Ｈｉ"  # a mixed run: the ligature folded, the width forms kept
    assert clean("cafe\u0301", keep) == "café"  # composed (NFC and NFKC agree)


def test_chinese_traditional_simplified_and_mixed_unchanged():
    for cfg in (CleanTextConfig(), CleanTextConfig(width_forms="fold")):
        for text in ["帳戶", "账户", "我的帳戶被鎖定了", "我的账户被锁定了", "我的 iPhone 无法登录"]:
            assert clean(text, cfg) == text
    assert clean("我的 iPhone 无法登录！", CleanTextConfig()) == "我的 iPhone 无法登录！"
    assert clean("我的 iPhone 无法登录！", CleanTextConfig(width_forms="fold")) == "我的 iPhone 无法登录!"


def test_width_forms_setting_is_validated():
    assert "width_forms" in CleanTextConfig(width_forms="wide").validate()
    assert CleanTextConfig(width_forms="fold").validate() is None


def test_lowercase_and_length_cap():
    assert clean("Hello WORLD", CleanTextConfig(lowercase=True)) == "hello world"
    assert clean("abc def ghi", CleanTextConfig(max_chars=5)) == "abc d"


def test_invalid_utf8_is_named_error_or_replaced(tmp_path):
    p = tmp_path / "t.txt"
    p.write_bytes(b"caf\xe9 ok")
    with pytest.raises(TextDecodeError, match=r"not valid UTF-8 \(byte 3: b'\\xe9 ok'\)"):  # the offset of the bad byte
        stage().process_one({"path": str(p), "text": None})
    assert stage(encoding_errors="replace").process_one({"path": str(p), "text": None})["text"] == "caf\ufffd ok"


def test_empty_after_cleaning_is_named_error():
    with pytest.raises(EmptyText):
        stage().process_one({"text": " <p> </p>\u200b ", "path": None})


def test_utf8_bom_file(tmp_path):
    p = tmp_path / "bom.txt"
    p.write_bytes("\ufeffhello".encode("utf-8"))
    assert stage().process_one({"path": str(p), "text": None})["text"] == "hello"
