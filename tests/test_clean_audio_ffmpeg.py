"""Voice notes libsndfile cannot read, decoded through FFmpeg (PyAV): an iPhone-style M4A (AAC), a
browser MediaRecorder WebM (Opus), an MP4 video with a sound track, AMR-NB — each made here with PyAV's
own encoders — plus the ways such files go wrong."""

import io

import numpy as np
import pytest

from pipeline.errors import AudioDecodeError, InputTooLarge
from stages.clean_audio import CleanAudio, CleanAudioConfig, decode

CFG = CleanAudioConfig(sample_rate=16000, duration=1.0, trim_db=0)


class Pipe:
    """A write-only sink, as a browser's MediaRecorder stream is: the muxer cannot go back to write the
    duration."""

    def __init__(self):
        self.chunks: list[bytes] = []

    def write(self, data) -> int:
        self.chunks.append(bytes(data))
        return len(data)

    def getvalue(self) -> bytes:
        return b"".join(self.chunks)


def encode(container: str, codec: str, rate: int, seconds: float, freq: float = 1000.0, channels: int = 1,
           video: bool = False, audio: bool = True, streamed: bool = False) -> bytes:
    import av

    buf = Pipe() if streamed else io.BytesIO()
    with av.open(buf, mode="w", format=container) as out:
        vstream = out.add_stream("mpeg4", rate=10) if video else None  # every stream before the first packet
        stream = out.add_stream(codec, rate=rate, layout="mono" if channels == 1 else "stereo") if audio else None
        if vstream is not None:
            vstream.width, vstream.height, vstream.pix_fmt = 64, 48, "yuv420p"
            frames = [av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 8 % 256, np.uint8), format="rgb24")
                      for i in range(int(seconds * 10))]
            for frame in [*frames, None]:
                out.mux(vstream.encode(frame))
        if stream is not None:
            t = np.arange(int(rate * seconds)) / rate
            wave = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
            samples = np.repeat(wave[None, :], channels, axis=0)
            for start in range(0, samples.shape[1], 960):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start : start + 960]), format="fltp",
                                                   layout=stream.layout.name)
                frame.sample_rate = rate
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
    return buf.getvalue()


@pytest.mark.parametrize("container,codec,rate,channels,ext", [
    ("mp4", "aac", 44100, 1, "m4a"),       # iPhone voice memo
    ("webm", "libopus", 48000, 1, "webm"),  # browser MediaRecorder
    ("mp4", "aac", 48000, 2, "mp4"),       # a phone video's sound track (below, with a picture)
    ("amr", "libopencore_amrnb", 8000, 1, "amr"),  # older phones' voice recorders, MMS
])
def test_ffmpeg_formats_are_cleaned_like_any_other(tmp_path, container, codec, rate, channels, ext):
    data = encode(container, codec, rate, 0.8, channels=channels, video=ext == "mp4")
    path = tmp_path / f"note.{ext}"
    path.write_bytes(data)
    out = CleanAudio(CFG).process_one({"path": str(path)})
    audio = out["audio"]
    assert audio.shape == (16000,) and audio.dtype == np.float32 and out["source_rate"] == rate
    assert abs(np.abs(audio).max() - 0.95) < 0.05  # peak normalized
    voiced = audio[: int(0.7 * 16000)]
    spectrum = np.abs(np.fft.rfft(voiced))
    assert abs(np.argmax(spectrum) * 16000 / voiced.size - 1000) < 10  # the 1 kHz tone survived
    assert np.abs(audio[int(0.9 * 16000) :]).max() < 0.05  # padded after ~0.8 s (codec tails aside)


def test_duration_is_checked_before_decoding_and_while_decoding():
    data = encode("mp4", "aac", 16000, 3.0)
    with pytest.raises(InputTooLarge, match=r"audio is 3 s long, over clean_audio.max_input_seconds = 2"):
        decode(data, max_seconds=2)
    samples, rate = decode(data, max_seconds=10)
    assert rate == 16000 and samples.shape[1] == 1 and 2.9 * 16000 <= samples.shape[0] <= 3.2 * 16000
    streamed = encode("webm", "libopus", 48000, 3.0, streamed=True)  # no duration anywhere in the file
    with pytest.raises(InputTooLarge, match=r"runs past clean_audio.max_input_seconds = 2 s while decoding \(its header "
                                            r"gave no duration\)"):
        decode(streamed, max_seconds=2)
    assert decode(streamed, max_seconds=10)[0].shape == (144000, 1)


def test_broken_and_soundless_files_are_named_errors():
    m4a = encode("mp4", "aac", 16000, 1.0)
    with pytest.raises(AudioDecodeError, match=r"not a readable audio file \(libsndfile: .*; FFmpeg: "):
        decode(b"\x00\x00\x00\x18ftypM4A " + b"\x00" * 64, max_seconds=60)  # an M4A header and nothing else
    with pytest.raises(AudioDecodeError, match=r"not a readable audio file"):
        decode(m4a[: len(m4a) // 3], max_seconds=60)  # cut before its index (moov at the end)
    from PIL import Image

    jpeg = io.BytesIO()
    Image.new("RGB", (20, 20)).save(jpeg, "JPEG")  # FFmpeg's probing takes it for a one-frame video
    with pytest.raises(AudioDecodeError, match=r"FFmpeg guessed 'jpeg_pipe', not an audio or video container"):
        decode(jpeg.getvalue(), max_seconds=60)
    silent_video = encode("mp4", "aac", 16000, 1.0, video=True, audio=False)
    with pytest.raises(AudioDecodeError, match=r"the file holds no audio stream \(mov,mp4.*: video\)"):
        decode(silent_video, max_seconds=60)
