"""A corpus of bad and odd inputs, generated in code. Each entry: (id, column, value, expected outcome).

Expected outcome: "ok" (cleaned correctly) or the (stage, error type, a phrase the message must hold)
it must fail with. Run with ``CAPS`` (the size caps some entries are built to exceed).
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np

# Caps the corpus is built against: the long clip, the oversized files and the small bomb exceed them.
CAPS = ["clean_audio.max_input_seconds=3", "data.max_file_mb=2", "clean_text.max_bytes=1500000",
        "clean_image.max_pixels=1000000"]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A 4 KB PNG whose header claims width x height 1-bit pixels over a body that is not a valid zlib
    stream: decoding it fails, so only a check of the header can refuse it as a bomb."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    body = b"\x78\x9c" + np.random.default_rng(width).bytes(4000)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b"")


def _save(img, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _wav(samples: np.ndarray, sr: int, subtype: str, fmt: str = "WAV") -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, samples, sr, subtype=subtype, format=fmt)
    return buf.getvalue()


def tone(sr: int, seconds: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    x = (0.4 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def build(root: Path) -> list[tuple[str, str, str, object]]:
    """Write the corpus under root (the data root) and return its entries."""
    from PIL import Image

    img, aud, txt = root / "img", root / "aud", root / "txt"
    for d in (img, aud, txt):
        d.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    jpeg = _save(rgb, "JPEG", quality=90)
    entries: list[tuple[str, str, str, object]] = []

    def image(name: str, data: bytes, expect):
        (img / name).write_bytes(data)
        entries.append((f"img_{name.split('.')[0]}", "image", f"img/{name}", expect))

    image("truncated.jpg", jpeg[: len(jpeg) // 2], ("clean_image", "ImageDecodeError", "image file is truncated"))
    image("zero.png", b"", ("clean_image", "ImageDecodeError", "image file is empty (0 bytes)"))
    unreadable = "not an image format Pillow can read"
    image("random.png", np.random.default_rng(1).bytes(2048), ("clean_image", "ImageDecodeError", unreadable))
    image("text.jpg", b"this is not a jpeg, just words\n" * 20, ("clean_image", "ImageDecodeError", unreadable))
    image("cmyk.jpg", _save(Image.new("CMYK", (40, 30), (0, 255, 255, 0)), "JPEG"), "ok")
    image("deep16.png", _save(Image.fromarray(np.full((30, 40), 40000, np.uint16)), "PNG"), "ok")
    pal = Image.new("P", (40, 30), 1)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image("palette.png", _save(pal, "PNG", transparency=0), "ok")
    exif = Image.Exif()
    exif[0x0112] = 8
    image("rotated.jpg", _save(rgb, "JPEG", exif=exif), "ok")
    image("pixel.png", _save(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG"), "ok")
    # Both bombs' bodies cannot be decoded: only a check of the header can call them bombs.
    image("bomb.png", bomb_png(), ("clean_image", "DecompressionBomb", "900000000 pixels"))  # Pillow's own limit
    image("bomb_cap.png", bomb_png(1500, 1000),
          ("clean_image", "DecompressionBomb", "1500x1000 = 1,500,000 pixels, over clean_image.max_pixels"))
    # Over data.max_file_mb (2 MB in CAPS): a valid PNG with 2.5 MB of padding, refused before reading.
    image("oversize.png", _save(rgb, "PNG") + bytes(2_500_000), ("clean_image", "InputTooLarge", "(data.max_file_mb)"))
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 0, 255))]
    image("animated.gif", _save(frames[0], "GIF", save_all=True, append_images=frames[1:]), "ok")

    def audio(name: str, data: bytes, expect):
        (aud / name).write_bytes(data)
        entries.append((f"aud_{name.split('.')[0]}", "audio", f"aud/{name}", expect))

    audio("zero.wav", b"", ("clean_audio", "EmptyAudio", "audio file is empty (0 bytes)"))
    audio("header.wav", _wav(np.zeros((0, 1), np.float32), 8000, "PCM_16"), ("clean_audio", "EmptyAudio", "no samples"))
    flac = _wav(tone(16000, 1.0), 16000, "PCM_16", "FLAC")
    audio("truncated.flac", flac[: len(flac) // 3], ("clean_audio", "AudioDecodeError", "flac decoder lost sync"))
    audio("u8.wav", _wav(tone(8000, 0.5), 8000, "PCM_U8"), "ok")
    audio("s24.wav", _wav(tone(44100, 0.5), 44100, "PCM_24"), "ok")
    audio("float.wav", _wav(tone(16000, 0.5), 16000, "FLOAT"), "ok")
    audio("stereo48k.wav", _wav(tone(48000, 0.5, channels=2), 48000, "PCM_16"), "ok")
    audio("tenms.wav", _wav(tone(16000, 0.01), 16000, "PCM_16"), "ok")
    audio("silent.wav", _wav(np.zeros(8000, np.float32), 8000, "PCM_16"), ("clean_audio", "SilentAudio", "audio is silent"))
    nan = tone(8000, 0.5)
    nan[100], nan[200], nan[300] = np.nan, np.inf, np.nan
    audio("nan.wav", _wav(nan, 8000, "FLOAT"), ("clean_audio", "InvalidSamples", "3 NaN or infinite samples"))
    audio("long.wav", _wav(tone(1000, 5.0), 1000, "PCM_16"),
          ("clean_audio", "InputTooLarge", "5 s long, over clean_audio.max_input_seconds = 3"))
    audio("random.wav", np.random.default_rng(2).bytes(4096),
          ("clean_audio", "AudioDecodeError", "libsndfile: Format not recognised"))

    def text_file(name: str, data: bytes, expect):
        (txt / name).write_bytes(data)
        entries.append((f"txt_{name.split('.')[0]}", "text_path", f"txt/{name}", expect))

    def text_inline(name: str, value: str, expect):
        entries.append((f"txt_{name}", "text", value, expect))

    empty = "text is empty after cleaning"
    text_file("empty.txt", b"", ("clean_text", "EmptyText", empty))
    text_inline("whitespace", " \t \u3000 \u200b ", ("clean_text", "EmptyText", empty))
    text_file("latin1.txt", "caf\xe9 cr\xe8me".encode("latin-1"), ("clean_text", "TextDecodeError", "byte 3: b'\\xe9 cr'"))
    text_file("huge.txt", ("a long message " * 70_000).encode(), "ok")  # 1.05 MB: under both caps, cut to max_chars
    text_file("overbytes.txt", ("a message " * 160_000).encode(),  # 1.6 MB: over clean_text.max_bytes (1.5 MB)
              ("clean_text", "InputTooLarge", "over 1500000 bytes (clean_text.max_bytes)"))
    text_inline("cjk", "无法登录我的账户，请帮忙", "ok")
    text_inline("rtl", "مرحبا، لا أستطيع تسجيل الدخول", "ok")
    text_inline("emoji", "app crashed again 😡👨‍👩‍👧", "ok")
    text_inline("control", "bell\x07 null\x00 escape\x1b[31m red", "ok")
    text_inline("html", "<div><script>x()</script><b>Refund</b>&nbsp;&amp; invoice</div>", "ok")

    outside = root.parent / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "secret.wav").write_bytes(_wav(tone(8000, 0.5), 8000, "PCM_16"))
    os.symlink(outside / "secret.wav", aud / "link.wav")
    escapes = f"points outside the data root {root.resolve()}"
    entries += [
        ("man_missing", "audio", "aud/not_there.wav", ("clean_audio", "MissingFile", "file not found: 'aud/not_there.wav'")),
        ("man_dotdot", "audio", "../outside/secret.wav", ("clean_audio", "PathEscapesRoot", escapes)),
        ("man_absolute", "audio", str(outside / "secret.wav"), ("clean_audio", "PathEscapesRoot", escapes)),
        ("man_symlink", "audio", "aud/link.wav",
         ("clean_audio", "PathEscapesRoot", f"is a link to {(outside / 'secret.wav').resolve()}, outside the data root")),
    ]
    return entries
