"""transcribe: a voice note -> what was said (Whisper on CTranslate2, offline), cleaned like a typed message.

The whole note is read by ``clean_audio``'s own decoders and caps (``clean_audio.max_input_seconds`` is
checked from the header and again while decoding; corrupt, truncated or soundless files are the same
named errors), mixed to mono and resampled to 16 kHz — **not** trimmed or cut to ``clean_audio.duration``:
a 40 s note is transcribed to its end.

Whisper invents text on silence, music and noise ("Thank you for watching"), so words are guarded in
layers: Silero VAD (``faster-whisper``'s, ONNX) runs first and a note without speech is ``NoWords``
without decoding; decoding sees only the speech regions it found (merged into pieces of at most 30 s),
never conditions on its own previous text, drops segments whose no-speech probability is high while
their log-probability is low (or is very high on its own: ``no_speech_max``), or whose text compresses
like a loop ("Mmmmmm..."), a transcript of nothing but hums and interjections is no words, and a word or phrase repeated more than ``max_repeats`` times in a row is
cut back. The pieces of all the notes in a batch are decoded together, ``model_batch_size`` per forward
pass (faster-whisper's batched pipeline); a lone note, such as a query, is a batch of one. A note with no words
left is ``NoWords``: not a failure, the item simply has no transcript (downstream: zeros + mask 0).

The transcript goes through ``clean_text``'s own ``clean()`` with the ``[clean_text]`` settings (they are in
this stage's key), so it becomes text exactly as a typed message does; ``bert_speech`` embeds it with
the ``[bert]`` model. Outputs: ``text``, ``language`` (detected or fixed), ``language_probability``,
``speech_seconds`` (what VAD kept), ``seconds`` (the whole note).
"""

from __future__ import annotations

import bisect
import os
import re
from dataclasses import dataclass
from typing import Any

from pipeline.config import execution_only
from pipeline.errors import ConfigError, NoWords
from pipeline.outputs import Field
from pipeline.stage import Stage, register

from . import speech_model
from .clean_audio import read_audio, to_mono
from .clean_text import clean

RATE = 16000  # what Whisper and Silero VAD take
WINDOW = 30  # seconds Whisper sees at once
# A transcript of nothing but hums and interjections ("Hmm.", "Mm-hmm", "uh") is no words: the backstop for
# what Whisper hears in humming, tones and breathing.
FILLERS = re.compile(r"(?i)[\s.,!?…-]*((h*m+h*|m+-?h+m+|u+h+|u+m+|a+h+|o+h+|e+r+m*)[\s.,!?…-]*)*")


@dataclass
class TranscribeConfig:
    # package:whisper-base (multilingual, default) | package:whisper-tiny.en (English only, ~2x faster) | a CTranslate2 Whisper folder
    model: str = "package:whisper-base"
    # auto (detected per note) | a language code such as en, zh, de
    language: str = "auto"
    beam_size: int = 5
    # int8 | int8_float32 | float32 (CTranslate2 compute type; int8 measured as accurate and fastest on CPU)
    compute_type: str = "int8"
    # Silero VAD before decoding: a note without speech gives no words and costs no decoding.
    vad: bool = True
    # Silero's speech probability a frame needs (its own default is 0.5; the demo's voice-like hums pass
    # 0.5 in 143 of 622 notes, 0.7 in 42, 0.9 in none, while every recorded sentence passes even 0.9).
    vad_threshold: float = 0.7
    min_speech_ms: int = 250
    # A segment is dropped when its no-speech probability is above this and its avg log-prob below the next
    # (measured on the demo: speech 0.02-0.04 with base, up to 0.25 with tiny.en; "Hmm.", "I'm", "You" that
    # base heard in voice-like tones 0.36-0.49 with log-probs -1.2 to -2.6) ...
    no_speech_threshold: float = 0.3
    log_prob_threshold: float = -1.0
    # ... or when its no-speech probability alone is above this ("Thank you." on a short tone: 0.85, -0.98),
    no_speech_max: float = 0.5
    # ... or when its text compresses better than this (gzip ratio: "Mmmmmmmm..." 4.9-6.0, speech 0.8-1.0).
    max_compression: float = 2.4
    # Words that tell Whisper what to expect (product names, the domain), e.g. "PayPal, Apple Pay, two-factor".
    prompt: str = ""
    # A word or phrase (up to 4 words) repeated more than this many times in a row is cut back to this many.
    max_repeats: int = 3
    # Notes per call; their speech pieces (up to 30 s each) are decoded model_batch_size per forward pass.
    batch_size: int = execution_only(32)
    model_batch_size: int = execution_only(8)
    # 0 = the cores this process may use
    threads: int = execution_only(0)
    # auto (GPU when CTranslate2 sees one) | cpu | cuda
    device: str = execution_only("auto")

    def validate(self) -> str | None:
        if self.compute_type not in ("int8", "int8_float32", "float32", "float16", "int8_float16"):
            return f"compute_type must be int8, int8_float32, float32, float16 or int8_float16, not {self.compute_type!r}"
        if not 1 <= self.beam_size <= 16:
            return f"beam_size must be within 1..16, not {self.beam_size}"
        if self.language != "auto" and not re.fullmatch(r"[a-z]{2,3}", self.language):
            return f"language must be auto or a language code such as en or zh, not {self.language!r}"
        if not 0 < self.no_speech_max <= 1 or not 0 < self.no_speech_threshold <= 1 or self.max_compression <= 0:
            return "no_speech_max and no_speech_threshold must be within 0..1"
        if not 0 < self.vad_threshold < 1:
            return f"vad_threshold must be within 0..1, not {self.vad_threshold}"
        if self.max_repeats < 1:
            return "max_repeats must be at least 1"
        return None


def cut_repeats(text: str, most: int) -> str:
    """A run of the same word or phrase (1-4 words) repeated more than ``most`` times kept ``most`` times
    (the backstop for Whisper's "the the the ..." loops)."""
    words = text.split()
    for n in (1, 2, 3, 4):
        out, i = [], 0
        while i < len(words):
            phrase, run = words[i : i + n], 1
            while len(phrase) == n and words[i + run * n : i + (run + 1) * n] == phrase:
                run += 1
            if run > most:
                out += phrase * most
                i += n * run
            else:
                out.append(words[i])
                i += 1
        words = out
    return " ".join(words)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@register
class Transcribe(Stage):
    name = "transcribe"
    version = "1"
    inputs = ("raw:audio",)
    uses = ("clean_text", "clean_audio")
    Config = TranscribeConfig
    holds_model = True
    outputs = {"text": Field("str"), "language": Field("str"), "language_probability": Field("float"),
               "speech_seconds": Field("float"), "seconds": Field("float")}

    def identity(self) -> dict[str, Any]:
        return speech_model.identity(speech_model.resolve(self.config.model), self.digest_file)

    def setup(self) -> None:
        import ctranslate2

        cfg = self.config
        device = cfg.device
        if device == "auto":
            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        self.device = device
        self.model, self.lock = speech_model.load(speech_model.resolve(cfg.model), device, cfg.compute_type,
                                                  cfg.threads or cpu_count())
        if cfg.language != "auto" and cfg.language not in self.model.supported_languages:
            raise ConfigError(f"transcribe.language {cfg.language!r} is not one this model knows "
                              f"({', '.join(self.model.supported_languages[:12])}, ...)")

    def describe_run(self) -> dict[str, Any]:
        return {"model": self.config.model, "device": getattr(self, "device", self.config.device),
                "compute_type": self.config.compute_type, "language": self.config.language}

    def speech(self, audio) -> list[tuple[int, int]]:
        """Speech regions (sample ranges) Silero VAD finds, merged into pieces of at most 30 s (Whisper's
        window); the whole note in 30 s pieces when VAD is off."""
        if not self.config.vad:
            found = [(s, min(s + WINDOW * RATE, audio.size)) for s in range(0, audio.size, WINDOW * RATE)]
        else:
            from faster_whisper.vad import VadOptions, get_speech_timestamps

            found = [(c["start"], c["end"]) for c in get_speech_timestamps(audio, VadOptions(
                threshold=self.config.vad_threshold, min_speech_duration_ms=self.config.min_speech_ms,
                max_speech_duration_s=WINDOW))]
        pieces: list[tuple[int, int]] = []
        for start, end in found:
            if pieces and end - pieces[-1][0] <= WINDOW * RATE:
                pieces[-1] = (pieces[-1][0], end)
            else:
                pieces.append((start, end))
        return pieces

    def prepare(self, record: dict) -> tuple[Any, list[tuple[int, int]], float]:
        """(16 kHz mono samples, speech pieces, seconds) for one note; NoWords when it holds no speech."""
        import numpy as np

        audio_cfg = self.used["clean_audio"]
        data, sr = read_audio(record["path"], audio_cfg.max_input_seconds)
        audio = to_mono(data, sr, RATE)
        seconds = audio.size / RATE
        if audio.size == 0 or float(np.abs(audio).max()) < audio_cfg.silence_peak:
            raise NoWords("the voice note is silent")
        pieces = self.speech(audio)
        if not pieces:
            raise NoWords(f"no speech in the voice note ({seconds:.1f} s; voice activity detection found none)")
        return audio, pieces, seconds

    def process(self, batch: list[dict]) -> list[dict | Exception]:
        """Every note's speech pieces decoded together, ``model_batch_size`` pieces per forward pass
        (faster-whisper's batched pipeline over the notes laid end to end); a note that cannot be read
        fails alone. A single note (a query) goes the same way, as a batch of one."""
        import numpy as np

        outs: list[Any] = [None] * len(batch)
        notes = []
        for n, record in enumerate(batch):
            try:
                notes.append((n, *self.prepare(record)))
            except Exception as exc:  # noqa: BLE001 - per-item outcomes are data
                outs[n] = exc
        if notes:
            audio = np.concatenate([a for _, a, _, _ in notes])
            stamps, owner, offset = [], [], 0
            for k, (_, a, pieces, _) in enumerate(notes):
                stamps += [{"start": (offset + s) / RATE, "end": (offset + e) / RATE} for s, e in pieces]
                owner += [k] * len(pieces)
                offset += a.size
            texts, languages = self.decode(audio, stamps)
            for k, (n, a, pieces, seconds) in enumerate(notes):
                mine = [i for i, o in enumerate(owner) if o == k]
                said = " ".join(texts[i] for i in mine if texts[i])
                said = "" if FILLERS.fullmatch(said) else said
                text = clean(cut_repeats(said, self.config.max_repeats), self.used["clean_text"])
                speech = sum(e - s for s, e in pieces) / RATE
                if not text:
                    outs[n] = NoWords(f"no words recognised in {speech:.1f} s of speech")
                    continue
                language, probability = languages[mine[0]]
                outs[n] = {"text": text, "language": language, "language_probability": round(float(probability), 4),
                           "speech_seconds": round(float(speech), 3), "seconds": round(float(seconds), 3)}
        return outs

    def decode(self, audio, stamps: list[dict]) -> tuple[list[str], list[tuple[str, float]]]:
        """Text and (language, probability) per speech piece. Segments that are probably not speech (a high
        no-speech probability with a low log-probability) are dropped."""
        from faster_whisper import BatchedInferencePipeline

        cfg = self.config
        fixed = cfg.language if cfg.language != "auto" else (None if self.model.model.is_multilingual else "en")
        texts = [""] * len(stamps)
        starts = [round(s["start"], 3) for s in stamps]
        with self.lock:
            seen = _Languages(self.model.model) if fixed is None else None
            if seen is not None:
                self.model.model = seen  # records the language Whisper detects for each piece
            try:
                segments, _ = BatchedInferencePipeline(self.model).transcribe(
                    audio, language=fixed or "en", multilingual=fixed is None, beam_size=cfg.beam_size,
                    clip_timestamps=stamps, batch_size=max(1, cfg.model_batch_size), without_timestamps=True,
                    initial_prompt=cfg.prompt or None,
                    log_prob_threshold=cfg.log_prob_threshold, no_speech_threshold=cfg.no_speech_threshold)
                for seg in segments:
                    if seg.no_speech_prob > cfg.no_speech_max or seg.compression_ratio > cfg.max_compression or (
                            seg.no_speech_prob > cfg.no_speech_threshold and seg.avg_logprob < cfg.log_prob_threshold):
                        continue
                    piece = bisect.bisect_right(starts, round(seg.start, 3) + 1e-3) - 1
                    texts[piece] = (texts[piece] + " " + seg.text.strip()).strip()
            finally:
                if seen is not None:
                    self.model.model = seen.inner
        languages = seen.found if seen is not None else [(fixed, 1.0)] * len(stamps)
        return texts, languages


class _Languages:
    """The CTranslate2 model, remembering what ``detect_language`` found for each piece, in order (the
    batched pipeline detects each piece's language but does not return it)."""

    def __init__(self, inner):
        self.inner, self.found = inner, []

    def detect_language(self, encoded):
        result = self.inner.detect_language(encoded)
        self.found += [(token.strip("<|>"), float(p)) for token, p in (r[0] for r in result)]
        return result

    def __getattr__(self, name):
        return getattr(self.inner, name)
