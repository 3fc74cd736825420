"""Cross-lingual search through the real path: `mmp features` then `mmp search`, with the real USE model from
its wheel (the bert model is the tests' tiny one, so the multilingual space is what finds the match)."""

from __future__ import annotations

import json

import pytest

from dummies import SMALL, run, write_manifest

# Each topic in one language only: what a query finds in the other language is found by meaning.
TICKETS = [
    ("en_login", "I can't log in after resetting my password"),
    ("en_refund", "My refund still hasn't arrived after two weeks"),
    ("en_crash", "The app crashes every time I open the camera"),
    ("zh_charge", "这个月我的订阅被扣了两次钱"),
    ("zh_upload", "文件一直上传不了"),
    ("zh_invoice", "发票上的金额不对"),
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ml")
    manifest = write_manifest(root / "m.csv", [{"id": i, "text": t, "label": "x"} for i, t in TICKETS])
    run(manifest, root / "w")
    return root, manifest


def search(data, capsys, *args) -> list[str]:
    from mmpipe_cli.commands import main

    root, manifest = data
    argv = ["search", "-m", str(manifest), "-w", str(root / "w"), "--quiet", "--json", *args]
    for s in SMALL:
        argv += ["--set", s]
    capsys.readouterr()
    assert main(argv) == 0
    return [r["id"] for r in json.loads(capsys.readouterr().out)["results"]]


def test_a_chinese_query_finds_the_english_ticket(data, capsys):
    assert search(data, capsys, "--text", "无法登录", "-k", "1") == ["en_login"]
    assert search(data, capsys, "--text", "退款还没到", "-k", "1") == ["en_refund"]
    assert search(data, capsys, "--text", "无法登录", "-k", "1", "--modality", "text_ml") == ["en_login"]


def test_an_english_query_finds_the_chinese_ticket(data, capsys):
    assert search(data, capsys, "--text", "I was charged twice this month", "-k", "1") == ["zh_charge"]
    assert search(data, capsys, "--text", "the invoice amount is wrong", "-k", "1") == ["zh_invoice"]
    assert search(data, capsys, "--text", "I cannot upload my files", "-k", "1") == ["zh_upload"]
    assert search(data, capsys, "--like", "zh_upload", "-k", "1", "--modality", "text_ml")[0].startswith("en_")
