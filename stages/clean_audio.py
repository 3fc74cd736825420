"""clean_audio: WAV/FLAC/OGG/MP3 (libsndfile), M4A/AAC, WebM/Opus, AMR and more (FFmpeg via PyAV) -> mono
float32 at a fixed rate/length.

Duration is read from the header first (over ``max_input_seconds`` is refused before decoding),
channels are averaged to mono, NaN/inf samples are a named error, the signal is resampled (soxr),
leading and trailing silence trimmed, level normalized (peak or RMS), then padded with zeros or cropped
to ``duration`` seconds. Empty and all-silent audio are named errors.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.config import execution_only
from pipeline.errors import AudioDecodeError, EmptyAudio, InputTooLarge, InvalidSamples, SilentAudio
from pipeline.fs import read_bytes
from pipeline.outputs import Field
from pipeline.stage import Stage, register

if TYPE_CHECKING:
    import numpy as np


@dataclass
class CleanAudioConfig:
    sample_rate: int = 16000
    # Output length in seconds (pad with zeros / crop from the start after trimming).
    duration: float = 5.0
    # Silence trimming threshold in dB below the peak; 0 disables trimming.
    trim_db: float = 40.0
    # peak | rms | none
    normalize: str = "peak"
    # Target: peak level (0..1) for "peak", dBFS for "rms".
    level: float = 0.95
    # All-silent threshold: peak amplitude below this is an error.
    silence_peak: float = 1e-4
    # Refuse inputs longer than this (read from the header, before decoding).
    max_input_seconds: float = 600.0
    batch_size: int = execution_only(32)

    def validate(self) -> str | None:
        if self.sample_rate < 1000:
            return f"sample_rate must be at least 1000, not {self.sample_rate}"
        if not 0.05 <= self.duration <= 3600:
            return f"duration must be within 0.05..3600 s, not {self.duration}"
        if self.normalize not in ("peak", "rms", "none"):
            return f"normalize must be peak, rms or none, not {self.normalize!r}"
        return None


def decode(data: bytes, max_seconds: float) -> tuple[np.ndarray, int]:
    """Samples as float32 (frames, channels) and the file's sample rate."""
    import soundfile as sf

    try:
        info = sf.info(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        info, reason = None, str(getattr(exc, "error_string", None) or exc).rstrip(".")
    if info is not None:
        if info.frames == 0 or info.samplerate <= 0:
            raise EmptyAudio(f"audio holds no samples ({info.format}, {info.frames} frames)")
        if info.frames / info.samplerate > max_seconds:
            raise InputTooLarge(
                f"audio is {info.frames / info.samplerate:.0f} s long, over clean_audio.max_input_seconds = {max_seconds:g}"
            )
        try:
            samples, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise AudioDecodeError(f"audio cannot be decoded: {exc}") from None
        return samples, sr
    return _decode_other(data, max_seconds, reason)


# FFmpeg demuxers taken as media (its probing also "recognises" text as `tty`, a JPEG as `image2`, etc.).
CONTAINERS = {"mov", "mp4", "m4a", "3gp", "matroska", "webm", "ogg", "amr", "amrnb", "amrwb", "aac", "mp3", "wav", "w64",
              "flac", "aiff", "caf", "asf", "avi"}


def _decode_other(data: bytes, max_seconds: float, reason: str) -> tuple[np.ndarray, int]:
    """Formats libsndfile does not read (``reason``: its error) — M4A/AAC voice memos, WebM/Opus browser
    recordings, AMR, video containers with a sound track — through FFmpeg as PyAV bundles it. The
    duration is checked from the container before decoding, and again while decoding (a header can lie)."""
    import av
    import numpy as np

    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, ValueError, EOFError) as exc:
        raise AudioDecodeError(f"not a readable audio file (libsndfile: {reason}; FFmpeg: {_ffmpeg_reason(exc)})") from None
    with container:
        if not set(container.format.name.split(",")) & CONTAINERS:
            raise AudioDecodeError(f"not a readable audio file (libsndfile: {reason}; FFmpeg guessed "
                                   f"'{container.format.name}', not an audio or video container)")
        streams = container.streams.audio
        if not streams:
            raise AudioDecodeError(f"the file holds no audio stream ({container.format.name}: "
                                   f"{', '.join(s.type for s in container.streams) or 'no streams'})")
        stream = streams[0]
        declared = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else \
            (container.duration / 1e6 if container.duration else 0.0)
        if declared > max_seconds:
            raise InputTooLarge(f"audio is {declared:.0f} s long, over clean_audio.max_input_seconds = {max_seconds:g}")
        rate = stream.codec_context.sample_rate or stream.sample_rate
        to_float = av.AudioResampler(format="fltp", rate=rate)  # planar float32, channels kept, no rate change
        blocks, frames = [], 0
        try:
            for frame in container.decode(stream):
                for out in to_float.resample(frame):
                    blocks.append(out.to_ndarray())
                    frames += blocks[-1].shape[1]
                if rate and frames > max_seconds * rate:
                    said = f"its header said {declared:.0f} s" if declared else "its header gave no duration"
                    raise InputTooLarge(f"audio runs past clean_audio.max_input_seconds = {max_seconds:g} s while decoding "
                                        f"({said})")
            for out in to_float.resample(None):  # flush
                blocks.append(out.to_ndarray())
                frames += blocks[-1].shape[1]
        except (av.FFmpegError, ValueError, EOFError) as exc:
            raise AudioDecodeError(f"audio cannot be decoded ({stream.codec_context.name}): {_ffmpeg_reason(exc)}") from None
    if not rate or frames == 0:
        raise EmptyAudio(f"audio holds no samples ({container.format.name}, {stream.codec_context.name})")
    return np.concatenate(blocks, axis=1).T.astype(np.float32, copy=False), int(rate)


def _ffmpeg_reason(exc: Exception) -> str:
    return str(getattr(exc, "strerror", None) or exc).rstrip(".")


def read_audio(path: str, max_seconds: float) -> tuple[np.ndarray, int]:
    """A file's samples (frames, channels) and rate: empty files, over-long ones (from the header, and
    while decoding) and undecodable ones are named errors. ``transcribe`` reads voice notes through this too."""
    raw = read_bytes(path)
    if not raw:
        raise EmptyAudio("audio file is empty (0 bytes)")
    return decode(raw, max_seconds)


def to_mono(data: np.ndarray, sr: int, rate: int) -> np.ndarray:
    """(frames, channels) at ``sr`` -> mono float32 at ``rate``; NaN or infinite samples are a named error."""
    import numpy as np

    if data.size == 0:
        raise EmptyAudio("audio holds no samples")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise InvalidSamples(f"audio contains {bad} NaN or infinite samples")
    mono = data.mean(axis=1) if data.ndim == 2 else data
    mono = mono.astype(np.float32)
    if sr != rate:
        import soxr

        mono = soxr.resample(mono, sr, rate, quality="HQ").astype(np.float32)
    return mono


def clean_audio(data: np.ndarray, sr: int, cfg: CleanAudioConfig) -> np.ndarray:
    import numpy as np

    mono = to_mono(data, sr, cfg.sample_rate)
    peak = float(np.abs(mono).max()) if mono.size else 0.0
    if peak < cfg.silence_peak:
        raise SilentAudio(f"audio is silent (peak {peak:.2e} below clean_audio.silence_peak = {cfg.silence_peak:g})")
    if cfg.trim_db > 0:
        mono = _trim(mono, cfg.trim_db, peak)
    if cfg.normalize == "peak":
        mono = mono * (cfg.level / float(np.abs(mono).max()))
    elif cfg.normalize == "rms":
        rms = float(np.sqrt(np.mean(mono.astype(np.float64) ** 2)))
        mono = np.clip(mono * (10 ** (cfg.level / 20) / rms), -1.0, 1.0)
    n = int(round(cfg.duration * cfg.sample_rate))
    out = np.zeros(n, dtype=np.float32)
    out[: min(n, mono.size)] = mono[:n]
    return out


def _trim(x: np.ndarray, top_db: float, peak: float) -> np.ndarray:
    """Cut leading/trailing samples more than top_db below the signal's peak."""
    import numpy as np

    loud = np.flatnonzero(np.abs(x) >= peak * 10 ** (-top_db / 20))
    return x[loud[0] : loud[-1] + 1] if loud.size else x


@register
class CleanAudio(Stage):
    name = "clean_audio"
    version = "1"
    inputs = ("raw:audio",)
    Config = CleanAudioConfig
    threaded = True

    def output_spec(self) -> dict[str, Field]:
        cfg = self.config
        return {"audio": Field("float32", (int(round(cfg.duration * cfg.sample_rate)),)), "sample_rate": Field("int"),
                "source_rate": Field("int"), "source_seconds": Field("float")}

    def process_one(self, record: dict) -> dict:
        data, sr = read_audio(record["path"], self.config.max_input_seconds)
        audio = clean_audio(data, sr, self.config)
        return {
            "audio": audio,
            "sample_rate": self.config.sample_rate,
            "source_rate": int(sr),
            "source_seconds": float(data.shape[0] / sr),
        }
