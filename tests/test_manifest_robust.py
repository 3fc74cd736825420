"""Manifests as spreadsheets and mail exports really come: huge cells, semicolons, tabs, a BOM."""

import pytest

from dummies import run


def write(path, text: str, bom: bool = False):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def test_a_cell_larger_than_the_csv_default_limit_is_read_and_capped(tmp_path):
    huge = "a long e-mail pasted inline " * 10_000  # 280,000 characters, over csv's 131,072
    body = "".join(f'item{i},"{huge if i == 1 else f"short text {i}"}"\n' for i in range(3))
    huger = "x" * 2_000_001
    m = write(tmp_path / "m.csv", "id,text\n" + body + f"item3,{huger}\n")
    report = run(m, tmp_path / "w", "--set", "clean_text.max_chars=500", "--set", "clean_text.max_bytes=2000000",
                 command="run clean_text")
    assert report["stages"]["clean_text"]["computed"] == 3
    assert [(f["id"], f["error"]) for f in report["failures"]] == [("item3", "InputTooLarge")]
    assert "item3" in report["failures"][0]["message"] and "clean_text.max_bytes" in report["failures"][0]["message"]
    out = tmp_path / "t.parquet"
    run(m, tmp_path / "w", "--set", "clean_text.max_chars=500", "--set", "clean_text.max_bytes=2000000",
        "--out", str(out), command="export clean_text")
    import pandas as pd

    texts = dict(zip(*(pd.read_parquet(out)[c] for c in ("id", "text"))))
    assert len(texts["item1"]) == 500 and texts["item0"] == "short text 0"


@pytest.mark.parametrize("delimiter", [";", "\t", "|", ","])
def test_the_delimiter_is_taken_from_the_header(tmp_path, delimiter):
    from pipeline.manifest import load

    rows = [["id", "split", "label", "text"], ["a", "train", "x", "hello, world; and more"], ["b", "val", "y", "bye"]]
    quote = (lambda v: f'"{v}"' if delimiter in v else v)
    text = "\r\n".join(delimiter.join(quote(v) for v in row) for row in rows) + "\r\n"
    items = load(str(write(tmp_path / "m.csv", text, bom=True)))
    assert [(i.id, i.split, i.label, i.text) for i in items] == [("a", "train", "x", "hello, world; and more"),
                                                                    ("b", "val", "y", "bye")]


def test_a_header_without_an_id_names_the_delimiter_it_tried(tmp_path):
    from pipeline.errors import ManifestError
    from pipeline.manifest import load

    with pytest.raises(ManifestError, match="missing required column 'id'.*split by semicolon"):
        load(str(write(tmp_path / "m.csv", "ident;text;label\na;hi;x\n")))


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_with_a_byte_order_mark_is_read(tmp_path, encoding):
    """Excel's "Unicode Text" export: UTF-16 with a BOM, tab-separated, CRLF."""
    from pipeline.manifest import load

    bom = b"\xff\xfe" if encoding == "utf-16-le" else b"\xfe\xff"
    text = "id\ttext\tlabel\r\nt1\tcafé refund 收不到验证码\tbilling\r\nt2\tlogin 👍\taccess\r\n"
    path = tmp_path / "m.csv"
    path.write_bytes(bom + text.encode(encoding))
    assert [(i.id, i.text, i.label) for i in load(str(path))] == [("t1", "café refund 收不到验证码", "billing"),
                                                                  ("t2", "login 👍", "access")]


def test_a_manifest_in_a_legacy_encoding_says_to_save_it_as_utf8(tmp_path):
    """Excel's plain "CSV" on Windows writes cp1252: refused with what to do, not guessed (a guess could
    silently change texts and ids)."""
    from pipeline.errors import ManifestError
    from pipeline.manifest import load

    path = tmp_path / "m.csv"
    path.write_bytes(b"\xff\xfe" + "id,text\r\nt1,hi\r\n".encode("utf-16-le")[:-1])  # a UTF-16 file cut mid-character
    with pytest.raises(ManifestError, match=r"m.csv: it starts with a UTF-16 byte-order mark but is not valid UTF-16"):
        load(str(path))
    path.write_bytes("id,text\r\nt1,café refund\r\n".encode("cp1252"))
    with pytest.raises(ManifestError, match=r"m.csv: it is not UTF-8 \(byte 0xe9: invalid continuation byte\); save it as "
                                            r"UTF-8 \(Excel: \"CSV UTF-8\"\), or as UTF-16 with a byte-order mark"):
        load(str(path))
