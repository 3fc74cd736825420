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


@pytest.mark.parametrize("mode", ["RGB", "L", "LA", "RGBA", "P", "I;16", "I", "F", "1"])
def test_every_mode_becomes_rgb(mode):
    img = Image.new("RGB", (50, 40), (10, 200, 30)).convert(mode)
    check(clean_image(encode(img, "TIFF" if mode in ("I", "F") else "PNG"), CFG))


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


def test_exif_orientation_applied():
    img = Image.new("RGB", (80, 40), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 40, 40))  # left half white
    stored = img.transpose(Image.Transpose.ROTATE_90)  # 40x80, white at the bottom
    exif = Image.Exif()
    exif[0x0112] = 6
    out = clean_image(encode(stored, "JPEG", exif=exif, quality=95), CleanImageConfig(size=40))
    # Displayed upright again: 80x40 -> shorter side 40, centre crop of the middle: split left/right
    assert out[:, :10].mean() > out[:, -10:].mean() + 100 or out[:, :10].mean() + 100 < out[:, -10:].mean()


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


def test_decompression_bomb_refused_before_decoding():
    img = Image.new("1", (12000, 12000))
    with pytest.raises(DecompressionBomb, match="pixels"):
        clean_image(encode(img), CleanImageConfig(size=32, max_pixels=50_000_000))


@pytest.mark.parametrize("data", [b"", b"not an image at all", encode(Image.new("RGB", (64, 64)), "JPEG")[:200]])
def test_corrupt_is_named_error(data):
    with pytest.raises(ImageDecodeError):
        clean_image(data, CFG)
