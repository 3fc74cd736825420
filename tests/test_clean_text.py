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
    assert clean("Ｈｅｌｌｏ\u200b wor\u00adld\ufeff", cfg) == "Hello world"
    assert clean("bell\x07 and\x00null", cfg) == "bell and null"
    assert clean("line1\r\n\r\nline2\u3000end", cfg) == "line1 line2 end"


def test_cjk_rtl_and_emoji_survive():
    cfg = CleanTextConfig()
    for text in ["无法登录我的账户", "مرحبا بالعالم", "שלום עולם", "family 👨‍👩‍👧 ok 👍🏽", "می‌خواهم"]:
        assert clean(text, cfg) == text


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
