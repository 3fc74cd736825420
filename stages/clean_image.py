"""clean_image: any image Pillow reads -> uint8 HxWx3 RGB, resized and centre-cropped.

Pixel count is checked from the header before decoding (decompression bombs are refused), EXIF
orientation applied, every mode (L, LA, P with transparency, RGBA, CMYK, I;16, I, F) converted to RGB
with alpha composited on ``background``, shorter side resized to ``size`` and the centre cropped.
Animated images use their first frame. ``decode_image`` (every step before the resize) is shared with
``ocr``, which reads screenshots at their own resolution.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pipeline.config import execution_only
from pipeline.errors import DecompressionBomb, ImageDecodeError, InputTooLarge
from pipeline.fs import read_bytes
from pipeline.outputs import Field
from pipeline.stage import Stage, register

if TYPE_CHECKING:
    import numpy as np


@dataclass
class CleanImageConfig:
    size: int = 224
    # RGB the alpha channel is composited on.
    background: list = field(default_factory=lambda: [255, 255, 255])
    # Refuse images with more pixels than this (checked from the header, before decoding).
    max_pixels: int = 60_000_000
    batch_size: int = execution_only(64)

    def validate(self) -> str | None:
        if not 8 <= self.size <= 4096:
            return f"size must be within 8..4096, not {self.size}"
        if len(self.background) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in self.background):
            return f"background must be three integers 0..255, not {self.background!r}"
        return None


def _to_rgb(img, background: tuple[int, int, int]):
    import numpy as np
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, mode="L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("LA", "La", "PA", "RGBa"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        base = Image.new("RGB", img.size, background)
        base.paste(img, mask=img.getchannel("A"))
        return base
    return img.convert("RGB") if img.mode != "RGB" else img


# ISO-BMFF brands of HEIF/HEIC stills (iPhone photos): read through pillow-heif's libheif opener.
HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}


def _open_heif_too(data: bytes) -> None:
    """Register pillow-heif's opener with Pillow the first time a HEIF file comes by (importing it costs
    time that no other image should pay)."""
    if data[4:8] == b"ftyp" and data[8:12] in HEIF_BRANDS:
        from pillow_heif import register_heif_opener

        register_heif_opener()


def decode_image(data: bytes, cfg: CleanImageConfig, draft=None):
    """Image bytes -> a PIL RGB image at its own resolution: header bomb caps, HEIF, EXIF orientation, every
    mode to RGB. ``draft(w, h)`` may name the smallest (w, h) the caller needs, letting a JPEG decode at
    1/2, 1/4 or 1/8 scale (never below it). Shared by clean_image and ocr."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    _open_heif_too(data)
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < cfg.max_pixels:
        # Pillow's own bomb check (warning past its limit, error past twice that) runs inside ``open``,
        # before ours: raise it to our cap so that a larger clean_image.max_pixels takes effect. Only
        # ever raised, so a process with several configs keeps the smallest check that admits each.
        Image.MAX_IMAGE_PIXELS = cfg.max_pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > cfg.max_pixels:
                raise DecompressionBomb(f"image is {w}x{h} = {w * h:,} pixels, over clean_image.max_pixels = {cfg.max_pixels:,}")
            if img.format == "JPEG" and draft is not None:
                img.draft(img.mode, draft(w, h))
            img.load()
            img = ImageOps.exif_transpose(img)
            img = _to_rgb(img, tuple(cfg.background))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise DecompressionBomb(f"image refused as a decompression bomb: {exc}") from None
        except UnidentifiedImageError:
            raise ImageDecodeError("not an image format Pillow can read (corrupt or wrong extension)") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageDecodeError(f"image cannot be decoded: {exc}") from None
    w, h = img.size
    if w < 1 or h < 1:
        raise ImageDecodeError(f"image has no pixels ({w}x{h})")
    return img


def clean_image(data: bytes, cfg: CleanImageConfig) -> np.ndarray:
    import numpy as np
    from PIL import Image

    size = cfg.size
    img = decode_image(data, cfg, lambda w, h: (max(size, w * size // min(w, h)), max(size, h * size // min(w, h))))
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=3.0 if scale < 0.5 else None)
    left, top = (nw - size) // 2, (nh - size) // 2
    img = img.crop((left, top, left + size, top + size))
    return np.asarray(img, dtype=np.uint8).copy()


def read_image_bytes(path: str) -> bytes:
    """An image file's bytes; an empty file is ImageDecodeError, one over 2 GiB InputTooLarge."""
    data = read_bytes(path)
    if not data:
        raise ImageDecodeError("image file is empty (0 bytes)")
    if len(data) > 1 << 31:
        raise InputTooLarge("image file over 2 GiB")
    return data


@register
class CleanImage(Stage):
    name = "clean_image"
    version = "1"
    inputs = ("raw:image",)
    Config = CleanImageConfig
    threaded = True

    def process_one(self, record: dict) -> dict:
        return {"image": clean_image(read_image_bytes(record["path"]), self.config)}

    def output_spec(self) -> dict[str, Field]:
        return {"image": Field("uint8", (self.config.size, self.config.size, 3))}
