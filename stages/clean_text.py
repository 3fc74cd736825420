"""clean_text: raw bytes or inline text -> normalized UTF-8 text.

Decode (strict by default: invalid bytes are a named error; ``replace`` substitutes U+FFFD), unescape
HTML entities and strip tags (script/style bodies dropped), Unicode NFKC, remove control and invisible
format characters (zero-width space, BOM, soft hyphen, word joiner, bidi overrides) while keeping the
joiners that emoji and Persian script need, collapse whitespace, optional lowercasing, length cap.

Width forms: with ``width_forms = "keep"`` (the default) NFKC applies to everything but the characters
whose Unicode decomposition is ``<wide>`` or ``<narrow>`` (the full-width and half-width forms of
U+FF00-U+FFEF, e.g. ``，！Ｈｅｌｌｏ１２３`` and half-width katakana, and the ideographic space U+3000):
those stay as typed (NFC), so Chinese punctuation and full-width letters reach the models unchanged while
ligatures, superscripts and the like are still folded (``ﬁ`` -> ``fi``). The ideographic space still
becomes a plain space when whitespace is collapsed. ``"fold"`` applies NFKC to all of it (``，！Ｈｅｌｌｏ``
-> ``,!Hello``). Traditional and simplified characters and mixed scripts are never converted.
Text empty after cleaning is an ``EmptyText`` error: downstream treats the item's text as missing.
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass

from pipeline.config import execution_only
from pipeline.errors import EmptyText, InputTooLarge, MissingFile, TextDecodeError
from pipeline.outputs import Field
from pipeline.fs import open_input
from pipeline.stage import Stage, register

TAG = re.compile(r"<(script|style)\b.*?</\1\s*>|<!--.*?-->|<[A-Za-z/!][^<>]*>", re.S | re.I)
BLOCK_TAG = re.compile(r"<\s*(br|/p|/div|/li|/h[1-6]|/tr)\b[^>]*>", re.I)
WHITESPACE = re.compile(r"\s+")
# Invisible characters removed outright. ZWJ (U+200D) and ZWNJ (U+200C) are kept: emoji sequences
# and Persian/Indic scripts need them.
# The width forms "keep" leaves alone: every character of the blocks that hold them (the ideographic space
# U+3000, the halfwidth and fullwidth forms U+FF00-U+FFEF) whose decomposition is <wide> or <narrow>.
WIDTH_FORMS = "".join(ch for ch in map(chr, (0x3000, *range(0xFF00, 0xFFF0)))
                      if unicodedata.decomposition(ch).startswith(("<wide>", "<narrow>")))
WIDTH_RUN = re.compile(f"([{re.escape(WIDTH_FORMS)}]+)")
INVISIBLE = dict.fromkeys(map(ord, "\u200b\u2060\ufeff\u00ad\u180e\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"))


@dataclass
class CleanTextConfig:
    # strict: invalid UTF-8 is an item error; replace: substitute U+FFFD and go on.
    encoding_errors: str = "strict"
    strip_html: bool = True
    lowercase: bool = False
    # keep: full-width / half-width forms (，！Ｈｅｌｌｏ) stay as typed, NFKC folds the rest | fold: NFKC on all.
    width_forms: str = "keep"
    # Characters kept after cleaning (longer text is cut).
    max_chars: int = 20000
    # Raw text larger than this (a file, or an inline manifest cell) is refused before cleaning.
    max_bytes: int = 5_000_000
    batch_size: int = execution_only(256)

    def validate(self) -> str | None:
        if self.encoding_errors not in ("strict", "replace"):
            return f"encoding_errors must be 'strict' or 'replace', not {self.encoding_errors!r}"
        if self.width_forms not in ("keep", "fold"):
            return f"width_forms must be 'keep' or 'fold', not {self.width_forms!r}"
        if self.max_chars < 1:
            return "max_chars must be at least 1"
        return None


def normalize(text: str, width_forms: str = "keep") -> str:
    """NFKC, except (``"keep"``) that runs of full-width / half-width forms are only composed (NFC)."""
    if width_forms == "fold":
        return unicodedata.normalize("NFKC", text)
    parts = WIDTH_RUN.split(text)  # odd positions are the runs of width forms
    return "".join(unicodedata.normalize("NFC" if k % 2 else "NFKC", part) for k, part in enumerate(parts))


def clean(text: str, cfg: CleanTextConfig) -> str:
    if cfg.strip_html:
        text = BLOCK_TAG.sub(" ", text)
        text = TAG.sub("", text)
        text = html.unescape(text)
    text = normalize(text, cfg.width_forms)
    text = text.translate(INVISIBLE)
    text = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text)
    text = WHITESPACE.sub(" ", text).strip()
    if cfg.lowercase:
        text = text.lower()
    return text[: cfg.max_chars].rstrip()


@register
class CleanText(Stage):
    name = "clean_text"
    version = "2"
    inputs = ("raw:text",)
    Config = CleanTextConfig
    outputs = {"text": Field("str")}

    def process_one(self, record: dict) -> dict:
        cfg = self.config
        if record.get("path"):
            try:
                with open_input(record["path"]) as f:
                    data = f.read(cfg.max_bytes + 1)
            except FileNotFoundError:
                raise MissingFile(f"text file vanished: {record['path']}") from None
            if len(data) > cfg.max_bytes:
                raise InputTooLarge(f"text file is over {cfg.max_bytes} bytes (clean_text.max_bytes)")
            try:
                raw = data.decode("utf-8-sig", errors=cfg.encoding_errors)
            except UnicodeDecodeError as exc:
                raise TextDecodeError(
                    f"text is not valid UTF-8 (byte {exc.start}: {data[exc.start:exc.start + 4]!r}); "
                    "set clean_text.encoding_errors = \"replace\" to substitute"
                ) from None
        else:
            raw = record["text"]
            if len(raw) > cfg.max_bytes // 4 and len(raw.encode("utf-8")) > cfg.max_bytes:
                raise InputTooLarge(f"inline text is over {cfg.max_bytes} bytes (clean_text.max_bytes)")
        text = clean(raw, cfg)
        if not text:
            raise EmptyText("text is empty after cleaning; treated as missing text")
        return {"text": text}
