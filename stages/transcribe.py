"""transcribe: a voice note -> what was said (Whisper on CTranslate2, offline), cleaned like a typed message.

The whole note is read by ``clean_audio``'s own decoders and caps (``clean_audio.max_input_seconds`` is
checked from the header and again while decoding; corrupt, truncated or soundless files are the same
named errors), mixed to mono and resampled to 16 kHz — **not** trimmed or cut to ``clean_audio.duration``:
a 40 s note is transcribed to its end.

Whisper invents text on silence, music and noise ("Thank you for watching"), so words are guarded in
layers: Silero VAD (``faster-whisper``'s, ONNX) runs first and a note without speech is ``NoWords``
without decoding; decoding sees only the speech regions (``vad_filter``), never conditions on its own
previous text, drops segments whose no-speech probability is high while their log-probability is low,
and a word or phrase repeated more than ``max_repeats`` times in a row is cut back. A note with no words
left is ``NoWords``: not a failure, the item simply has no transcript (downstream: zeros + mask 0).

The transcript goes through ``clean_text``'s own ``clean()`` with the ``[clean_text]`` settings (they are in
this stage's key), so it becomes text exactly as a typed message does; ``bert_speech`` embeds it with
the ``[bert]`` model. Outputs: ``text``, ``language`` (detected or fixed), ``language_probability``,
``speech_seconds`` (what VAD kept), ``seconds`` (the whole note).
"""

from __future__ import annotations

import os
import re
import threading
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
    vad_threshold: float = 0.5
    min_speech_ms: int = 250
    # A segment is dropped when its no-speech probability is above this and its avg log-prob below the next.
    no_speech_threshold: float = 0.6
    log_prob_threshold: float = -1.0
    # A word or phrase (up to 4 words) repeated more than this many times in a row is cut back to this many.
    max_repeats: int = 3
    batch_size: int = execution_only(8)
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
        self.model = speech_model.load(speech_model.resolve(cfg.model), device, cfg.compute_type, cfg.threads or cpu_count())
        if cfg.language != "auto" and cfg.language not in self.model.supported_languages:
            raise ConfigError(f"transcribe.language {cfg.language!r} is not one this model knows "
                              f"({', '.join(self.model.supported_languages[:12])}, ...)")
        self.lock = threading.Lock()  # one decode at a time per model (the server calls from threads)

    def describe_run(self) -> dict[str, Any]:
        return {"model": self.config.model, "device": getattr(self, "device", self.config.device),
                "compute_type": self.config.compute_type, "language": self.config.language}

    def speech(self, audio) -> float:
        """Seconds of speech Silero VAD finds (the whole note when VAD is off)."""
        if not self.config.vad:
            return audio.size / RATE
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        found = get_speech_timestamps(audio, VadOptions(threshold=self.config.vad_threshold,
                                                        min_speech_duration_ms=self.config.min_speech_ms))
        return sum(c["end"] - c["start"] for c in found) / RATE

    def process_one(self, record: dict) -> dict:
        import numpy as np

        cfg, audio_cfg = self.config, self.used["clean_audio"]
        data, sr = read_audio(record["path"], audio_cfg.max_input_seconds)
        audio = to_mono(data, sr, RATE)
        seconds = audio.size / RATE
        if audio.size == 0 or float(np.abs(audio).max()) < audio_cfg.silence_peak:
            raise NoWords("the voice note is silent")
        speech = self.speech(audio)
        if speech == 0:
            raise NoWords(f"no speech in the voice note ({seconds:.1f} s; voice activity detection found none)")
        language = None if cfg.language == "auto" or not self.model.model.is_multilingual else cfg.language
        with self.lock:
            segments, info = self.model.transcribe(
                audio, language=language, beam_size=cfg.beam_size, vad_filter=cfg.vad,
                vad_parameters={"threshold": cfg.vad_threshold, "min_speech_duration_ms": cfg.min_speech_ms},
                condition_on_previous_text=False, no_speech_threshold=cfg.no_speech_threshold,
                log_prob_threshold=cfg.log_prob_threshold, without_timestamps=True)
            said = " ".join(s.text.strip() for s in segments)
        text = clean(cut_repeats(said, cfg.max_repeats), self.used["clean_text"])
        if not text:
            raise NoWords(f"no words recognised in {speech:.1f} s of speech")
        return {"text": text, "language": str(info.language), "language_probability": float(info.language_probability),
                "speech_seconds": round(float(speech), 3), "seconds": round(float(seconds), 3)}
