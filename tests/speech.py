"""Speech for tests: the demo's recorded clips (pipeline/demo_voice/, shipped in the repo, made once with
espeak-ng), what each one says, and word/character error rates (jiwer) after a plain normalisation."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.demo import SPOKEN, voice_clip


def spoken() -> list[dict]:
    """Every recorded clip: topic, index, pitch, the sentence it says and its held-out paraphrase."""
    out = []
    for index in range(max(len(v) for v in SPOKEN.values())):
        for topic, entries in SPOKEN.items():
            if index < len(entries):
                for pitch in ("low", "high"):
                    out.append({"topic": topic, "index": index, "pitch": pitch, "sentence": entries[index][0],
                                "paraphrase": entries[index][1]})
    return out


def clip_path(clip: dict) -> Path:
    return Path(str(voice_clip(clip["topic"], clip["index"], clip["pitch"])))


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def word_error_rate(reference: str, hypothesis: str) -> float:
    import jiwer

    return float(jiwer.wer(normalise(reference), normalise(hypothesis) or "-"))
