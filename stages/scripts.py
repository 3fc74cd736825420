"""Which writing system an item's typed message is in, for accuracy split by script in training reports.

``script(text)``: ``"zh"`` when the text holds a CJK ideograph (a Chinese or mixed Chinese-English
message), ``"en"`` when it holds Latin letters and no ideograph, ``"none"`` otherwise (no message, only
digits, emoji or punctuation). ``item_text(item)`` is the item's raw message: the inline text, or a local
text file read as UTF-8 with replacement (best effort: a message that cannot be read is ``""``).
"""

from __future__ import annotations

import re
from pathlib import Path

CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]")
LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")
SCRIPTS = ("zh", "en")


def script(text: str) -> str:
    if CJK.search(text):
        return "zh"
    return "en" if LATIN.search(text) else "none"


def item_text(item) -> str:
    if item.text:
        return item.text
    if item.text_path and "://" not in item.base:
        try:
            return (Path(item.base) / item.text_path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
    return ""


def by_script(items, y, pred, rows, labels: list[str]) -> dict[str, dict]:
    """{script: {"n", "accuracy", "topic_accuracy"}} over ``rows`` (a boolean mask); ``topic_accuracy`` is
    the accuracy on the part of the label before its first "_" (e.g. the demo's payment / access), given
    only when every label has one."""
    import numpy as np

    kinds = np.array([script(item_text(i)) for i in items])
    topical = all("_" in label for label in labels)
    topic = np.array([label.split("_")[0] for label in labels])
    out = {}
    for s in SCRIPTS:
        mask = rows & (kinds == s)
        if not mask.any():
            out[s] = {"n": 0}
            continue
        out[s] = {"n": int(mask.sum()), "accuracy": round(float((pred[mask] == y[mask]).mean()), 4)}
        if topical:
            out[s]["topic_accuracy"] = round(float((topic[pred[mask]] == topic[y[mask]]).mean()), 4)
    return out
