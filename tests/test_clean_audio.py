import numpy as np
import pytest
import soundfile as sf

from pipeline.errors import AudioDecodeError, EmptyAudio, InputTooLarge, InvalidSamples, SilentAudio
from stages.clean_audio import CleanAudio, CleanAudioConfig, clean_audio
from stages.mfcc import Mfcc, MfccConfig, mfcc_vectors

CFG = CleanAudioConfig(sample_rate=8000, duration=0.5)


def tone(sr, seconds, freq=440.0, amp=0.5):
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def run_file(path, cfg=CFG):
    return CleanAudio(cfg).process_one({"path": str(path)})


@pytest.mark.parametrize(
    "fmt,subtype,ext",
    [("WAV", "PCM_16", "wav"), ("WAV", "PCM_24", "wav"), ("WAV", "PCM_U8", "wav"), ("WAV", "FLOAT", "wav"),
     ("FLAC", "PCM_16", "flac"), ("OGG", "VORBIS", "ogg")],
)
@pytest.mark.parametrize("sr", [8000, 16000, 44100, 48000])
def test_formats_and_rates_to_fixed_mono(tmp_path, fmt, subtype, ext, sr):
    x = tone(sr, 0.3)
    path = tmp_path / f"a.{ext}"
    sf.write(path, np.stack([x, x], axis=1), sr, format=fmt, subtype=subtype)
    out = run_file(path)
    assert out["audio"].shape == (4000,) and out["audio"].dtype == np.float32
    assert out["source_rate"] == sr and out["sample_rate"] == 8000
    assert abs(np.abs(out["audio"]).max() - 0.95) < 0.02  # peak normalized
    assert np.abs(out["audio"][-500:]).max() == 0  # padded after 0.3 s


def test_downmix_resample_keeps_frequency():
    sr = 44100
    x = tone(sr, 1.0, freq=1000)
    out = clean_audio(np.stack([x, x], axis=1), sr, CleanAudioConfig(sample_rate=8000, duration=1.0, trim_db=0))
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) * 8000 / out.size - 1000) < 5


def test_trims_leading_and_trailing_silence():
    sr = 8000
    x = np.concatenate([np.zeros(4000, np.float32), tone(sr, 0.25), np.zeros(4000, np.float32)])
    out = clean_audio(x[:, None], sr, CleanAudioConfig(sample_rate=sr, duration=1.0))
    assert np.abs(out[:200]).max() > 0.1  # sound starts at once
    assert np.abs(out[2100:]).max() == 0  # 0.25 s of sound, then padding


def test_crop_long_input():
    out = clean_audio(tone(8000, 3.0)[:, None], 8000, CFG)
    assert out.shape == (4000,)


def test_rms_normalization():
    out = clean_audio(tone(8000, 0.5, amp=0.01)[:, None], 8000, CleanAudioConfig(sample_rate=8000, duration=0.5, normalize="rms", level=-20, trim_db=0))
    assert abs(20 * np.log10(np.sqrt(np.mean(out ** 2))) + 20) < 0.5


def test_named_errors(tmp_path):
    with pytest.raises(InvalidSamples, match="audio contains 2 NaN or infinite samples"):
        clean_audio(np.array([[0.1], [np.nan], [0.2], [-np.inf]], np.float32), 8000, CFG)
    with pytest.raises(SilentAudio):
        clean_audio(np.zeros((8000, 1), np.float32), 8000, CFG)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(EmptyAudio):
        run_file(empty)
    header_only = tmp_path / "header.wav"
    sf.write(header_only, np.zeros((0, 1), np.float32), 8000)
    with pytest.raises(EmptyAudio):
        run_file(header_only)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(np.random.default_rng(0).bytes(3000))
    with pytest.raises(AudioDecodeError, match="libsndfile: Format not recognised"):
        run_file(junk)
    long = tmp_path / "long.wav"
    sf.write(long, tone(8000, 3.0), 8000)
    with pytest.raises(InputTooLarge, match="max_input_seconds"):
        run_file(long, CleanAudioConfig(sample_rate=8000, duration=0.5, max_input_seconds=2))


def test_mfcc_batched_equals_one_by_one():
    cfg = MfccConfig(n_mfcc=13, n_mels=32, n_fft=256, hop_length=128, deltas=True)
    clips = np.stack([tone(8000, 0.5, f) for f in (300, 600, 1200)])
    batched = mfcc_vectors(clips, 8000, cfg)
    single = np.concatenate([mfcc_vectors(c[None], 8000, cfg) for c in clips])
    assert batched.shape == (3, 13 * 3 * 2)
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-4)
    out = Mfcc(cfg).process([{"audio": c, "sample_rate": 8000} for c in clips])
    np.testing.assert_allclose(np.stack([o["mfcc"] for o in out]), batched, rtol=1e-5, atol=1e-5)
