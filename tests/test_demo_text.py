"""The demo's typed messages (pipeline/demo.py): English and Chinese phrasings per topic, train items typing
only TEXT_TRAIN phrasings and val / test items only TEXT_HELD_OUT ones, through the usual messy wrapping."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from pipeline import demo
from stages.clean_text import CleanTextConfig, clean
from stages.scripts import script


def _phrasing(message: str, cfg: CleanTextConfig) -> tuple[str, str, str]:
    """(which bank, topic, phrasing) of the one phrasing the cleaned ``message`` holds."""
    found = [(bank, topic, p) for bank, texts in (("train", demo.TEXT_TRAIN), ("held_out", demo.TEXT_HELD_OUT))
             for topic, phrasings in texts.items() for p in phrasings if clean(p, cfg) in message]
    if len(found) != 1:
        raise AssertionError(f"{message!r} holds {len(found)} phrasings: {found}")
    return found[0]


@pytest.fixture(scope="module")
def typed_rows(tmp_path_factory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("typed_demo")
    demo.generate(out, n_items=160, n_spoken=0, n_shown=0)
    with open(out / "demo.csv", encoding="utf-8", newline="") as f:
        return out, list(csv.DictReader(f))


def test_phrasings_per_topic_and_language_and_held_out_apart():
    assert set(demo.TEXT) == set(demo.TEXT_TRAIN) == set(demo.TEXT_HELD_OUT) == {"payment", "access"}
    every = [p for texts in (demo.TEXT_TRAIN, demo.TEXT_HELD_OUT) for phrasings in texts.values() for p in phrasings]
    assert len(every) == len(set(every))  # no phrasing twice, in either bank or topic
    for topic in demo.TEXT:
        assert demo.TEXT[topic] == demo.TEXT_TRAIN[topic] + demo.TEXT_HELD_OUT[topic]
        for bank in (demo.TEXT_TRAIN, demo.TEXT_HELD_OUT):
            scripts = [script(p) for p in bank[topic]]
            assert scripts.count("zh") >= 4 and scripts.count("en") >= 4
        assert [script(p) for p in demo.TEXT[topic]].count("zh") >= 8
        assert [script(p) for p in demo.TEXT[topic]].count("en") >= 8


def test_train_items_type_train_phrasings_and_the_rest_held_out_ones(typed_rows):
    out, rows = typed_rows
    cfg = CleanTextConfig()
    used = {"train": set(), "held_out": set()}
    seen = 0
    for r in rows:
        if r["text_path"]:
            raw = (out / r["text_path"]).read_bytes().decode("utf-8", errors="replace")
        else:
            raw = r["text"]
        if not raw or r["text_path"] == "demo_data/text/latin1.txt":
            continue
        bank, _topic, phrasing = _phrasing(clean(raw, cfg), cfg)
        assert bank == ("train" if r["split"] == "train" else "held_out"), (r["id"], r["split"], phrasing)
        used[bank].add(phrasing)
        seen += 1
    assert seen > 140
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    # the wording varies: many phrasings of each bank are in use, Chinese and English
    assert len(used["train"]) >= 16 and len(used["held_out"]) >= 8
    for bank in used.values():
        assert {script(p) for p in bank} == {"zh", "en"}


def test_messages_still_get_the_messy_wrapping(typed_rows):
    _out, rows = typed_rows
    texts = [r["text"] for r in rows if r["text"]]
    assert any("<p>" in t or "<b>" in t for t in texts)
    assert any("&amp;" in t or "&quot;" in t or "&nbsp;" in t for t in texts)
    assert any("\u00a0" in t or "\u200b" in t or "\u3000" in t for t in texts)
    assert any("Ｈｅｌｌｏ，" in t for t in texts)
