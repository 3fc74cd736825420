import io

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import DecompressionBomb, ImageDecodeError
from stages.clean_image import CleanImageConfig, clean_image

CFG = CleanImageConfig(size=32)


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def check(arr):
    assert arr.shape == (32, 32, 3) and arr.dtype == np.uint8


def mode_image(mode: str) -> tuple[Image.Image, tuple[int, int, int]]:
    """A uniform 50x40 image in `mode` and the RGB it must become. 16-bit (and I/F holding 16-bit values)
    scale by 255/65535; I/F holding 0..255 stay as they are; alpha 255 is opaque."""
    size = (50, 40)
    if mode in ("RGB", "RGBA"):
        return Image.new(mode, size, (10, 200, 30, 255)[: len(mode)]), (10, 200, 30)
    if mode in ("L", "LA"):
        return Image.new(mode, size, (124, 255)[: len(mode)]), (124, 124, 124)
    if mode == "P":
        img = Image.new("P", size, 1)
        img.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
        return img, (10, 200, 30)
    if mode == "1":
        return Image.new("1", size, 1), (255, 255, 255)
    if mode == "I;16":
        return Image.fromarray(np.full(size[::-1], 124 * 257, np.uint16)), (124, 124, 124)
    if mode == "I16-in-I":
        return Image.fromarray(np.full(size[::-1], 200 * 257, np.int32)), (200, 200, 200)
    if mode == "I":
        return Image.fromarray(np.full(size[::-1], 77, np.int32)), (77, 77, 77)
    if mode == "F":
        return Image.fromarray(np.full(size[::-1], 99.0, np.float32)), (99, 99, 99)
    raise ValueError(mode)


@pytest.mark.parametrize("mode", ["RGB", "L", "LA", "RGBA", "P", "I;16", "I", "I16-in-I", "F", "1"])
def test_every_mode_becomes_rgb(mode):
    img, want = mode_image(mode)
    assert img.mode == {"I16-in-I": "I"}.get(mode, mode)
    out = clean_image(encode(img, "TIFF" if img.mode in ("I", "F") else "PNG"), CFG)
    check(out)
    assert (np.abs(out.astype(int) - want) <= 1).all(), (out.reshape(-1, 3).min(0), out.reshape(-1, 3).max(0), want)


def test_cmyk_jpeg():
    img = Image.new("CMYK", (64, 48), (0, 255, 255, 0))  # red
    out = clean_image(encode(img, "JPEG"), CFG)
    check(out)
    assert out[..., 0].mean() > 200 and out[..., 1].mean() < 60


def test_16bit_png_keeps_brightness():
    arr = np.full((20, 20), 60000, dtype=np.uint16)
    out = clean_image(encode(Image.fromarray(arr)), CFG)
    assert out.mean() > 220


def test_alpha_composited_on_background():
    img = Image.new("RGBA", (40, 40), (255, 0, 0, 0))  # fully transparent red
    out = clean_image(encode(img), CleanImageConfig(size=32, background=[0, 0, 255]))
    assert (out == [0, 0, 255]).all()


def test_palette_with_transparency():
    img = Image.new("P", (40, 40), 1)
    img.putpalette([255, 255, 255, 200, 0, 0] + [0] * 762)
    img.info["transparency"] = 1
    out = clean_image(encode(img, transparency=1), CleanImageConfig(size=32, background=[0, 255, 0]))
    assert (out == [0, 255, 0]).all()


@pytest.mark.parametrize("orientation,stored_as", [(6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270),
                                                  (3, Image.Transpose.ROTATE_180)])
def test_exif_orientation_applied(orientation, stored_as):
    img = Image.new("RGB", (80, 40), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 40, 40))  # upright: left half white
    stored = img.transpose(stored_as)  # what a camera held that way writes; the tag says how to turn it back
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = clean_image(encode(stored, "JPEG", exif=exif, quality=95), CleanImageConfig(size=40))
    # Upright again: 80x40 -> shorter side 40, centre crop; white on the left, black on the right.
    assert out[:, :12].mean() > 230 and out[:, -12:].mean() < 25


def test_resize_shorter_side_and_centre_crop():
    img = Image.new("RGB", (300, 100), (0, 0, 0))
    img.paste((255, 255, 255), (100, 0, 200, 100))  # white centre third
    out = clean_image(encode(img), CFG)
    assert out.mean() > 250  # the crop is the white centre


def test_tiny_and_animated():
    check(clean_image(encode(Image.new("RGB", (1, 1), (9, 9, 9))), CFG))
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    out = clean_image(buf.getvalue(), CFG)
    assert out[..., 0].mean() > 200  # first frame


def test_decompression_bomb_refused_before_decoding(monkeypatch):
    """A header claiming more than max_pixels, over a body that would not even decode: only a check of the
    header can say DecompressionBomb, and no pixel decoder runs."""
    from PIL import ImageFile

    from bad_inputs import bomb_png

    decoded = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(1) or real_load(self))
    data = bomb_png(4000, 3000)  # 12 M pixels claimed; a body that is not a valid zlib stream
    with pytest.raises(DecompressionBomb, match=r"4000x3000 = 12,000,000 pixels, over clean_image.max_pixels = 10,000,000"):
        clean_image(data, CleanImageConfig(size=32, max_pixels=10_000_000))
    assert decoded == []
    with pytest.raises(ImageDecodeError, match="cannot be decoded"):  # under the cap, the same file fails to decode
        clean_image(data, CleanImageConfig(size=32, max_pixels=20_000_000))
    assert decoded == [1]
    big = bomb_png(10000, 10000)  # 100 M pixels claimed: over Pillow's default limit (89 M), under this cap
    with pytest.raises(ImageDecodeError, match="cannot be decoded"):
        clean_image(big, CleanImageConfig(size=32, max_pixels=150_000_000))
    img = Image.new("1", (12000, 12000))  # 144 M pixels: over Pillow's own bomb limit too
    with pytest.raises(DecompressionBomb, match="pixels"):
        clean_image(encode(img), CleanImageConfig(size=32, max_pixels=50_000_000))


@pytest.mark.parametrize("data", [b"", b"not an image at all", encode(Image.new("RGB", (64, 64)), "JPEG")[:200]])
def test_corrupt_is_named_error(data):
    with pytest.raises(ImageDecodeError):
        clean_image(data, CFG)


@pytest.mark.parametrize("fmt", ["WEBP", "AVIF", "TIFF", "BMP"])
def test_other_common_formats(fmt):
    img = Image.new("RGB", (64, 48), (10, 200, 30))
    out = clean_image(encode(img, fmt, **({"quality": 95} if fmt in ("WEBP", "AVIF") else {})), CFG)
    check(out)
    assert np.abs(out.reshape(-1, 3).mean(0) - (10, 200, 30)).max() < 8  # lossy codecs round a little


def test_heic_photos_are_read_through_libheif():
    """An iPhone photo (HEIC: HEVC in an ISO-BMFF box), made here with pillow-heif's encoder: cleaned like
    any other image; one cut short is a named error."""
    import pillow_heif

    img = Image.new("RGB", (96, 64), (220, 20, 20))
    img.paste((20, 20, 220), (48, 0, 96, 64))  # left half red, right half blue
    buf = io.BytesIO()
    pillow_heif.from_pillow(img).save(buf, quality=95)
    data = buf.getvalue()
    assert data[4:12] == b"ftypheic"
    out = clean_image(data, CFG)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    left, right = out[:, :8].reshape(-1, 3).mean(0), out[:, -8:].reshape(-1, 3).mean(0)
    assert left[0] > 180 > left[2] and right[2] > 180 > right[0]
    with pytest.raises(ImageDecodeError):
        clean_image(data[: len(data) // 2], CFG)
