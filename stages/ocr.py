"""ocr: a screenshot -> the text on it (RapidOCR: PP-OCRv6 small detection + recognition, ONNX, offline).

The image is read by ``clean_image``'s own decoder (``decode_image``: the ``clean_image.max_pixels`` bomb
cap checked from the header, HEIF, EXIF orientation, every mode to RGB) at its own resolution — not the
224 px crop, where text is unreadable — and downscaled (never upscaled) so its longest side is at most
``max_side``; detection runs at that size too (``limit_type = "max"``). At most ``max_boxes`` candidate
text regions are examined (an adversarial image, noise or thousands of tiny glyphs, stays bounded in time
and memory; past the cap OpenCV's contour order keeps the lower regions of the image first).

Each box's text goes through ``clean_text``'s own ``clean()`` with the ``[clean_text]`` settings (in this
stage's key); boxes below ``min_score`` confidence, with fewer than ``min_chars`` non-space characters
(icons read as one glyph: "●", "三") or empty after cleaning are dropped, and a short or letterless box
(UI shapes read as "三二", "+=", "__") needs ``short_min_score``. Outputs: ``text`` (the boxes in
reading order, top to bottom then left to right, one per line), ``lines`` (boxes kept), ``score`` (their
mean confidence). No text left is ``NoWords``: not a failure, the item has no screen text.

Only the three model files the rapidocr wheel ships are used (any other version or language would be
downloaded, which this stage never does): each file's sha256 is checked in ``setup()`` (missing or
altered: an error naming the file, a stage error), and their content digests plus rapidocr's version are
in the key. One engine per process and settings, shared by stage objects; calls are serialised by a lock.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import execution_only
from pipeline.errors import NoWords
from pipeline.fs import package_folder
from pipeline.outputs import Field
from pipeline.stage import Stage, register

from .clean_image import decode_image, read_image_bytes
from .clean_text import clean

# The files rapidocr 3.10.0 ships in rapidocr/models/ (detection, recognition, direction classifier).
MODEL_FILES = {
    "det": ("PP-OCRv6_det_small.onnx", "090f04abcd9d9a7498bc4ebf677e4cb9bdce1fe4197ddb7e529f1ef44e1ff94f"),
    "rec": ("PP-OCRv6_rec_small.onnx", "6f327246b50388f3c176ae304bd95767ea6dc0c9ae92153ef8cbe210b3c14884"),
    "cls": ("ch_ppocr_mobile_v2.0_cls_mobile.onnx", "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c"),
}
# Where they are; None = the installed wheel's models folder (tests point it at a copy).
MODEL_DIR: str | None = None

_ENGINES: dict[tuple, tuple[Any, threading.Lock]] = {}
_ENGINES_LOCK = threading.Lock()


class OcrModelError(RuntimeError):
    """A packaged OCR model file is missing or is not the file this stage was tested with."""


@dataclass
class OcrConfig:
    # Longest side (px) a screenshot is read at: larger ones are downscaled, smaller ones kept as they are.
    max_side: int = 1280
    # Boxes whose recognition confidence is below this are dropped.
    min_score: float = 0.6
    # Boxes with fewer non-space characters than this are dropped (icons read as a single glyph).
    min_chars: int = 2
    # A box shorter than short_chars (non-space characters), or with no letter in it, needs this confidence:
    # the UI blocks of the demo's plain screenshots read as "三二", "+=", "1.11", "__" at 0.61-0.88, while
    # real dialog lines score 0.95-1.00.
    short_chars: int = 4
    short_min_score: float = 0.9
    # At most this many candidate text regions per image (bounds time and memory on adversarial images).
    max_boxes: int = 200
    # Text-direction classifier (turns upside-down lines); off: screenshot text is upright.
    use_cls: bool = False
    batch_size: int = execution_only(8)
    # ONNX Runtime threads; 0 = the cores this process may use
    threads: int = execution_only(0)

    def validate(self) -> str | None:
        if not 32 <= self.max_side <= 4096:
            return f"max_side must be within 32..4096, not {self.max_side}"
        if not 0.0 <= self.min_score <= 1.0:
            return f"min_score must be within 0..1, not {self.min_score}"
        if not 1 <= self.min_chars <= 100:
            return f"min_chars must be within 1..100, not {self.min_chars}"
        if not 0.0 <= self.short_min_score <= 1.0 or self.short_chars < 1:
            return "short_min_score must be within 0..1 and short_chars at least 1"
        if not 1 <= self.max_boxes <= 10000:
            return f"max_boxes must be within 1..10000, not {self.max_boxes}"
        if self.threads < 0:
            return "threads must be >= 0"
        return None


def model_dir() -> Path:
    if MODEL_DIR is not None:
        return Path(MODEL_DIR)
    folder = package_folder("rapidocr")
    if folder is None:
        raise OcrModelError("the rapidocr package is not installed (pip install rapidocr==3.10.0 onnxruntime)")
    return Path(folder) / "models"


def model_paths(use_cls: bool) -> dict[str, Path]:
    where = model_dir()
    return {part: where / name for part, (name, _) in MODEL_FILES.items() if use_cls or part != "cls"}


def check_model_files(paths: dict[str, Path]) -> None:
    """Every file present with its recorded sha256; otherwise OcrModelError naming the file."""
    for part, path in paths.items():
        expected = MODEL_FILES[part][1]
        if not path.is_file():
            raise OcrModelError(f"OCR model file {path} is missing (reinstall rapidocr==3.10.0)")
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        if h.hexdigest() != expected:
            raise OcrModelError(f"OCR model file {path} is not the tested file (sha256 {h.hexdigest()[:12]}…, "
                                f"expected {expected[:12]}…): reinstall rapidocr==3.10.0")


def rapidocr_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rapidocr")
    except PackageNotFoundError:
        return None


def engine_for(cfg: OcrConfig, paths: dict[str, Path]) -> tuple[Any, threading.Lock]:
    """The process's engine for these settings and files (built once; the lock serialises its calls)."""
    threads = cfg.threads or len(os.sched_getaffinity(0))
    key = (tuple(sorted((p, str(v)) for p, v in paths.items())), threads, cfg.max_side, cfg.max_boxes, cfg.use_cls)
    with _ENGINES_LOCK:
        if key not in _ENGINES:
            from rapidocr import RapidOCR

            params = {
                "Global.log_level": "error",
                "Global.use_cls": cfg.use_cls,
                "Global.text_score": 0.0,  # confidence is filtered here, with min_score
                "Global.max_side_len": cfg.max_side,
                "Det.limit_type": "max",  # the default (min, 736) upscales every small screenshot: ~10x slower
                "Det.limit_side_len": cfg.max_side,
                "Det.max_candidates": cfg.max_boxes,
                "EngineConfig.onnxruntime.intra_op_num_threads": threads,
                "EngineConfig.onnxruntime.inter_op_num_threads": 1,
            }
            # Explicit paths: rapidocr never resolves (or downloads) a model itself.
            params.update({f"{part.capitalize()}.model_path": str(path) for part, path in paths.items()})
            _ENGINES[key] = (RapidOCR(params=params), threading.Lock())
        return _ENGINES[key]


def fit(img, max_side: int):
    """Downscale a PIL image so its longest side is at most ``max_side`` (never upscale)."""
    from PIL import Image

    w, h = img.size
    if max(w, h) <= max_side:
        return img
    s = max_side / max(w, h)
    return img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.LANCZOS, reducing_gap=3.0)


@register
class Ocr(Stage):
    name = "ocr"
    version = "1"
    inputs = ("raw:image",)
    uses = ("clean_text", "clean_image")
    Config = OcrConfig
    holds_model = True
    outputs = {"text": Field("str"), "lines": Field("int"), "score": Field("float")}

    def identity(self) -> dict[str, Any]:
        files = {}
        for part, path in model_paths(self.config.use_cls).items():
            files[path.name] = self.digest_file(str(path)) if path.is_file() else None  # missing: setup() names it
        return {"rapidocr": rapidocr_version(), "files": files}

    def setup(self) -> None:
        paths = model_paths(self.config.use_cls)
        check_model_files(paths)
        self.engine, self.lock = engine_for(self.config, paths)

    def describe_run(self) -> dict[str, Any]:
        return {"rapidocr": rapidocr_version(), "max_side": self.config.max_side, "use_cls": self.config.use_cls}

    def read(self, data: bytes) -> list[tuple[str, float]]:
        """Image bytes -> (box text, confidence) for every box recognised, in reading order, unfiltered."""
        import numpy as np

        side = self.config.max_side
        img = decode_image(data, self.used["clean_image"],
                           lambda w, h: (-(-w * side // max(w, h)), -(-h * side // max(w, h))))
        bgr = np.ascontiguousarray(np.asarray(fit(img, side), dtype=np.uint8)[:, :, ::-1])
        with self.lock:
            result = self.engine(bgr)
        return list(zip(result.txts or (), map(float, result.scores or ())))

    def process_one(self, record: dict) -> dict:
        cfg, text_cfg = self.config, self.used["clean_text"]
        kept = []
        for raw, score in self.read(read_image_bytes(record["path"])):
            line = clean(raw, text_cfg)
            chars = len(line.replace(" ", ""))
            plain = chars >= cfg.short_chars and any(ch.isalpha() for ch in line)
            if chars >= cfg.min_chars and score >= (cfg.min_score if plain else max(cfg.min_score, cfg.short_min_score)):
                kept.append((line, score))
        if not kept:
            raise NoWords("no text on the screenshot")
        text = "\n".join(t for t, _ in kept)[: text_cfg.max_chars].rstrip()
        return {"text": text, "lines": len(kept), "score": sum(s for _, s in kept) / len(kept)}
