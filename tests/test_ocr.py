"""ocr: drawn dialogs (English drawn here with Pillow's own font; Chinese rendered once with a CJK font, in
tests/data/ocr/) read with CER <= 0.02; no text and icons are NoWords; EXIF orientation; adversarial images
bounded; bombs and corrupt files are the clean_image errors; model files checked by sha256 and keyed."""

from __future__ import annotations

import io
import json
import shutil
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

import stages.ocr as ocr
from pipeline.config import Config
from pipeline.errors import DecompressionBomb, ImageDecodeError, NoWords
from pipeline.stage import build_stage
from stages.clean_text import clean

DATA = Path(__file__).parent / "data" / "ocr"
EN = ("Payment failed", ["Your card was declined: insufficient funds.", "Try another card or contact your bank."],
      ["Cancel", "Retry"])


def dialog(title, lines, buttons, width=640, dark=False, font=None):
    """An app error dialog: a title bar, a red round icon, message lines, buttons at the bottom right."""
    s = width / 640

    def f(size):
        return ImageFont.truetype(font, int(size * s)) if font else ImageFont.load_default(size=int(size * s))

    bg, fg, bar, btn = ((32, 33, 36), (232, 234, 237), (60, 64, 67), (80, 84, 90)) if dark else \
        ((255, 255, 255), (32, 33, 36), (230, 232, 236), (225, 228, 232))
    h = int((110 + 34 * len(lines) + 70) * s)
    img = Image.new("RGB", (width, h), bg)
    d = ImageDraw.Draw(img)
    d.rectangle([0, 0, width, int(44 * s)], fill=bar)
    d.text((int(20 * s), int(10 * s)), title, fill=fg, font=f(22))
    d.ellipse([int(24 * s), int(70 * s), int(64 * s), int(110 * s)], fill=(217, 48, 37))
    y = int(66 * s)
    for line in lines:
        d.text((int(84 * s), y), line, fill=fg, font=f(20))
        y += int(34 * s)
    x = width - int(20 * s)
    for b in reversed(buttons):
        x0 = x - d.textlength(b, font=f(20)) - int(36 * s)
        d.rounded_rectangle([x0, h - int(56 * s), x, h - int(16 * s)], radius=int(6 * s), fill=btn)
        d.text((x0 + int(18 * s), h - int(48 * s)), b, fill=fg, font=f(20))
        x = x0 - int(14 * s)
    return img


def expected(title, lines, buttons) -> str:
    """What the stage should read: every text in reading order (buttons left to right), cleaned."""
    cfg = Config.load(None)["clean_text"]
    return "\n".join(clean(t, cfg) for t in [title, *lines, *buttons])


def cer(ref: str, hyp: str) -> float:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i]
        for j, h in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = cur
    return prev[-1] / max(1, len(ref))


def encode(img: Image.Image, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def variants(img: Image.Image) -> dict[str, bytes]:
    """The PNG, a JPEG q40 copy and a copy downscaled to 75%."""
    small = img.resize((img.width * 3 // 4, img.height * 3 // 4), Image.Resampling.LANCZOS)
    return {"png": encode(img), "jpeg40": encode(img, "JPEG", quality=40), "small": encode(small)}


def stage(*overrides: str):
    return build_stage("ocr", Config.load(None, list(overrides)))


@pytest.fixture(scope="module")
def ocr_stage():
    s = stage()
    s.ensure_ready()
    return s


def read(s, data: bytes, tmp_path: Path, name="shot.png"):
    path = tmp_path / name
    path.write_bytes(data)
    return s.process_one({"path": str(path)})


@pytest.mark.parametrize("dark", [False, True])
def test_english_dialog(ocr_stage, tmp_path, dark):
    want = expected(*EN)
    for kind, data in variants(dialog(*EN, width=640, dark=dark)).items():
        out = read(ocr_stage, data, tmp_path)
        assert cer(want, out["text"]) <= 0.02, (kind, out["text"])
        assert out["lines"] == 5 and 0.9 <= out["score"] <= 1.0, (kind, out)


@pytest.mark.parametrize("name", sorted(p.stem for p in DATA.glob("zh_*.png")))
def test_chinese_dialog(ocr_stage, tmp_path, name):
    want = expected(*json.loads((DATA / "zh_dialogs.json").read_text(encoding="utf-8"))[name])
    img = Image.open(DATA / f"{name}.png")
    for kind, data in {"png": encode(img), "jpeg40": encode(img.convert("RGB"), "JPEG", quality=40)}.items():
        out = read(ocr_stage, data, tmp_path)
        assert cer(want, out["text"]) <= 0.02, (kind, out["text"], want)


def test_chinese_fixtures_exist():
    assert len(list(DATA.glob("zh_*.png"))) >= 2


def test_no_text_and_icons_are_no_words(ocr_stage, tmp_path):
    blank = Image.new("RGB", (640, 400), (245, 246, 248))
    with pytest.raises(NoWords, match="no text"):
        read(ocr_stage, encode(blank), tmp_path)
    icons = blank.copy()
    d = ImageDraw.Draw(icons)
    d.ellipse([40, 40, 90, 90], fill=(217, 48, 37))
    d.text((300, 180), "●", fill=(30, 30, 30), font=ImageFont.load_default(size=40))
    d.text((450, 180), "!", fill=(30, 30, 30), font=ImageFont.load_default(size=40))
    with pytest.raises(NoWords):
        read(ocr_stage, encode(icons), tmp_path)


def test_exif_rotated_screenshot(ocr_stage, tmp_path):
    img = dialog(*EN)
    stored = img.transpose(Image.Transpose.ROTATE_90)  # as a phone stores it, with "rotate 90 CW to show"
    exif = Image.Exif()
    exif[0x0112] = 6
    out = read(ocr_stage, encode(stored, "JPEG", quality=90, exif=exif.tobytes()), tmp_path, "rot.jpg")
    assert cer(expected(*EN), out["text"]) <= 0.02, out["text"]


def test_max_side_downscales(tmp_path):
    s = stage("ocr.max_side=320")
    s.ensure_ready()
    big = dialog(*EN, width=1280)
    arr = np.asarray(ocr.fit(big, 320))
    assert max(arr.shape[:2]) == 320 and ocr.fit(dialog(*EN, width=200), 320).size[0] == 200  # never upscaled
    assert cer(expected(*EN), read(s, encode(big), tmp_path)["text"]) <= 0.05


def test_adversarial_images_are_bounded(tmp_path):
    s = stage("ocr.max_boxes=30")
    s.ensure_ready()
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (2000, 2000, 3), dtype=np.uint8))
    glyphs = Image.new("RGB", (1280, 1280), "white")
    d, font, chars = ImageDraw.Draw(glyphs), ImageFont.load_default(size=9), "abcdefghijklmnopqrstuvwxyz0123456789"
    for y in range(0, 1280, 11):
        for x in range(0, 1280, 14):
            d.text((x, y), "".join(rng.choice(list(chars), 2)), fill="black", font=font)
    for name, img in (("noise", noise), ("glyphs", glyphs)):
        start = time.perf_counter()
        try:
            lines = read(s, encode(img), tmp_path)["lines"]
        except NoWords:
            lines = 0
        took = time.perf_counter() - start
        assert took < 20 and lines <= 30, (name, took, lines)


def test_bomb_and_corrupt_files(ocr_stage, tmp_path):
    png = encode(Image.new("RGB", (8, 8), "white"))
    ihdr = struct.pack(">II", 9000, 9000) + png[24:29]  # 81 Mpx > max_pixels (60 M); depth, colour... as they were
    bomb = png[:16] + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + png[33:]
    with pytest.raises(DecompressionBomb, match="max_pixels"):
        read(ocr_stage, bomb, tmp_path)
    with pytest.raises(ImageDecodeError):
        read(ocr_stage, b"\x89PNG\r\n\x1a\n not really a png", tmp_path)
    with pytest.raises(ImageDecodeError):
        read(ocr_stage, encode(dialog(*EN))[:300], tmp_path)  # truncated
    with pytest.raises(ImageDecodeError, match="empty"):
        read(ocr_stage, b"", tmp_path)


@pytest.fixture()
def model_copy(tmp_path, monkeypatch):
    where = tmp_path / "models"
    shutil.copytree(ocr.model_dir(), where)
    monkeypatch.setattr(ocr, "MODEL_DIR", str(where))
    return where


def test_altered_or_missing_model_file_fails_setup_naming_it(model_copy):
    before = stage().identity()
    rec = model_copy / "PP-OCRv6_rec_small.onnx"
    with open(rec, "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    s = stage()
    assert s.identity() != before and s.identity()["files"]["PP-OCRv6_det_small.onnx"] == before["files"]["PP-OCRv6_det_small.onnx"]
    with pytest.raises(ocr.OcrModelError, match="PP-OCRv6_rec_small.onnx"):
        s.setup()
    (model_copy / "PP-OCRv6_det_small.onnx").unlink()
    s = stage()
    assert s.identity()["files"]["PP-OCRv6_det_small.onnx"] is None  # no crash while planning
    with pytest.raises(ocr.OcrModelError, match="PP-OCRv6_det_small.onnx is missing"):
        s.setup()


def test_identity_and_shared_engine(ocr_stage):
    ident = ocr_stage.identity()
    assert ident["rapidocr"] == "3.10.0" and set(ident["files"]) == {"PP-OCRv6_det_small.onnx", "PP-OCRv6_rec_small.onnx"}
    assert "ch_ppocr_mobile_v2.0_cls_mobile.onnx" in stage("ocr.use_cls=true").identity()["files"]
    other = stage("ocr.threads=0", "ocr.batch_size=2")
    other.ensure_ready()
    assert other.engine is ocr_stage.engine and other.digest() == ocr_stage.digest()
    assert stage("ocr.min_score=0.9").digest() != ocr_stage.digest()
    assert stage("clean_text.lowercase=true").digest() != ocr_stage.digest()


def test_threads_share_the_engine_safely(ocr_stage, tmp_path):
    paths = []
    for i, dark in enumerate((False, True)):
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(encode(dialog(*EN, width=360, dark=dark)))
    alone = [ocr_stage.process_one({"path": str(p)})["text"] for p in paths]
    got = [None] * len(paths)

    def work(i):
        got[i] = ocr_stage.process([{"path": str(paths[i])}])[0]["text"]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(paths))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == alone


def test_run_through_the_cli(tmp_path, model_copy, capsys):
    """A real run: screen text for a dialog, "no words" (not a failure) for a blank image; an altered model
    file is a stage error (exit 3) naming the file (the runner goes on with the other stages)."""
    from dummies import run, small_args, write_manifest

    from mmpipe_cli.commands import main

    data = tmp_path / "data"
    data.mkdir()
    (data / "dialog.png").write_bytes(encode(dialog(*EN, width=480)))
    (data / "blank.png").write_bytes(encode(Image.new("RGB", (300, 200), "white")))
    rows = [{"id": f"i{n}", "split": "train", "label": "a", "text": "see attached", "image": f"{n}.png"} for n in ("dialog", "blank")]
    manifest = write_manifest(data / "m.csv", rows)
    report = run(manifest, tmp_path / "w", command="run ocr")
    assert report["stages"]["ocr"]["computed"] == 1 and not report["failures"], report
    assert report["no_output"]["ocr"] == {"NoWords": 1}
    run(manifest, tmp_path / "w", command="run bert_screen")
    capsys.readouterr()
    main(["status", "--manifest", str(manifest), "--workdir", str(tmp_path / "w"), "--stage", "bert_screen", *small_args()])
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("bert_screen"))
    assert "no input 1 (ocr: 1 NoWords; not failures)" in line and "failed" not in line, line
    rec = model_copy / "PP-OCRv6_rec_small.onnx"
    rec.write_bytes(rec.read_bytes()[:-1] + b"\0")
    report = run(manifest, tmp_path / "w2", command="run ocr", expect=3)
    assert [e["stage"] for e in report["stage_errors"]] == ["ocr"] and "PP-OCRv6_rec_small.onnx" in report["stage_errors"][0]["message"]
