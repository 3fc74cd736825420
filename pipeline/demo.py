"""The bundled demo: a deterministic generator of ~600 messy support tickets (text + screenshot + voice).

Four classes, designed so that each modality alone confuses some of them and only fusion separates all:

| class          | text topic          | screenshot theme | voice pitch |
|----------------|---------------------|------------------|-------------|
| billing_light  | payment             | light            | low         |
| billing_dark   | payment             | dark             | high        |
| access_light   | account access      | light            | high        |
| access_dark    | account access      | dark             | low         |

Text tells payment from access, the screenshot tells light from dark, and the voice pitch is the parity
of the two (low when both cues agree in position, high otherwise), so any single modality reaches at
most ~50% and the three together close to 100%; each cue is flipped for ``NOISE`` of the items, which
fusion can outvote. A few percent of items lack a modality; three are deliberately broken.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

VERSION = "1"
NOISE = 0.08
CLASSES = {  # name: (text topic, screenshot theme, voice pitch)
    "billing_light": ("payment", "light", "low"),
    "billing_dark": ("payment", "dark", "high"),
    "access_light": ("access", "light", "high"),
    "access_dark": ("access", "dark", "low"),
}
TEXT = {
    "payment": [
        "I was charged twice for my subscription this month",
        "My refund still hasn't arrived after two weeks",
        "The invoice shows the wrong amount &amp; the wrong VAT number",
        "Payment failed but money left my account",
        "Why did my card get billed for the premium plan?",
        "我的账单金额不对，请帮我核实一下",
        "付款失败了，但是钱已经扣了",
        "退款什么时候到账？已经等了两个星期",
    ],
    "access": [
        "I can't log in after resetting my password",
        "The app says my account is locked &quot;for security&quot;",
        "Two-factor code never arrives so I cannot sign in",
        "Login page keeps spinning and never loads",
        "I forgot my username and the recovery email bounces",
        "无法登录我的账户，一直提示密码错误",
        "收不到验证码，没法登录",
        "账户被锁定了，怎么解锁？",
    ],
}
DECOR = ["", " 😡", " 🙏", " 👍🏽", " 😊", " 👨‍👩‍👧"]
MESS = [
    lambda t: t,
    lambda t: f"<p>{t}</p>",
    lambda t: f"  {t}\t\t please help!!  ",
    lambda t: t.replace(" ", "\u00a0", 2) + "\u200b",
    lambda t: f"<b>URGENT</b>&nbsp;{t}<br/>Thanks",
    lambda t: f"{t}\r\n\r\n-- sent from my phone",
    lambda t: "Ｈｅｌｌｏ，" + t,
    lambda t: t + "\u3000\u3000谢谢",
]
RATES = [8000, 16000, 44100, 48000]
AUDIO_FORMATS = [("wav", "WAV", "PCM_16"), ("wav", "WAV", "FLOAT"), ("flac", "FLAC", "PCM_16"), ("flac", "FLAC", "PCM_24"), ("ogg", "OGG", "VORBIS")]
IMAGE_MODES = ["RGB", "RGB", "L", "RGBA", "P", "exif"]


def _flip(rng: np.random.Generator, value: str, options: tuple[str, str]) -> str:
    return (options[1] if value == options[0] else options[0]) if rng.random() < NOISE else value


def _image(rng: np.random.Generator, theme: str, path_stem: Path) -> str:
    from PIL import Image, ImageDraw

    w, h = int(rng.integers(96, 640)), int(rng.integers(96, 640))
    base = rng.integers(200, 250) if theme == "light" else rng.integers(15, 60)
    tint = rng.integers(-15, 16, size=3)
    bg = tuple(int(np.clip(base + t, 0, 255)) for t in tint)
    img = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(img)
    ink = 40 if theme == "light" else 210
    for _ in range(int(rng.integers(3, 9))):  # UI blocks and text lines
        x0, y0 = int(rng.integers(0, w - 10)), int(rng.integers(0, h - 6))
        x1, y1 = x0 + int(rng.integers(10, max(11, w // 2))), y0 + int(rng.integers(3, 12))
        shade = tuple(int(np.clip(ink + v, 0, 255)) for v in rng.integers(-30, 31, size=3))
        draw.rectangle([x0, y0, x1, y1], fill=shade)
    accent = tuple(int(v) for v in rng.integers(0, 256, size=3))
    draw.ellipse([w // 3, h // 3, w // 3 + w // 6, h // 3 + h // 6], fill=accent)
    mode = IMAGE_MODES[int(rng.integers(len(IMAGE_MODES)))]
    if mode == "exif":
        exif = Image.Exif()
        exif[0x0112] = 6  # stored rotated; viewers rotate 90° clockwise to display
        path = path_stem.with_suffix(".jpg")
        img.transpose(Image.Transpose.ROTATE_90).save(path, quality=85, exif=exif)
    elif mode == "RGBA":
        alpha = Image.new("L", (w, h), 255)
        ImageDraw.Draw(alpha).rectangle([0, 0, w // 5, h], fill=0)
        img.putalpha(alpha)
        path = path_stem.with_suffix(".png")
        img.save(path)
    elif mode == "P":
        path = path_stem.with_suffix(".png")
        img.convert("P", palette=Image.Palette.ADAPTIVE, colors=32).save(path)
    elif mode == "L":
        path = path_stem.with_suffix(".png" if rng.random() < 0.5 else ".jpg")
        img.convert("L").save(path)
    else:
        path = path_stem.with_suffix(".jpg" if rng.random() < 0.5 else ".png")
        img.save(path, **({"quality": int(rng.integers(60, 95))} if path.suffix == ".jpg" else {}))
    return path.name


def _audio(rng: np.random.Generator, pitch: str, path_stem: Path) -> str:
    import soundfile as sf

    sr = RATES[int(rng.integers(len(RATES)))]
    seconds = float(rng.uniform(0.5, 6.0))
    n = int(sr * seconds)
    t = np.arange(n) / sr
    f0 = rng.uniform(110, 220) if pitch == "low" else rng.uniform(700, 1400)
    f0 = min(f0, sr / 2 / 4)
    wobble = 1 + 0.03 * np.sin(2 * np.pi * rng.uniform(2, 6) * t)
    phase = 2 * np.pi * np.cumsum(f0 * wobble) / sr
    voice = sum((0.6 / k) * np.sin(k * phase) for k in (1, 2, 3))
    envelope = np.clip(np.sin(np.pi * t / seconds) * 1.5, 0, 1)
    signal = voice * envelope * rng.uniform(0.1, 0.8) + rng.normal(0, 0.01, n)
    lead = np.zeros(int(sr * rng.uniform(0, 0.3)))
    signal = np.concatenate([lead, signal, lead]).astype(np.float32)
    if rng.random() < 0.4:
        signal = np.stack([signal, signal * rng.uniform(0.5, 1.0)], axis=1)
    ext, fmt, subtype = AUDIO_FORMATS[int(rng.integers(len(AUDIO_FORMATS)))]
    path = path_stem.with_suffix("." + ext)
    sf.write(path, np.clip(signal, -1, 1), sr, format=fmt, subtype=subtype)
    return path.name


def generate(out: Path, n_items: int = 600, seed: int = 7, force: bool = False) -> Path:
    """Write ``out/demo.csv`` and its raw files under ``out/demo_data``. Skips if already complete."""
    data = out / "demo_data"
    marker = data / ".complete"
    manifest = out / "demo.csv"
    stamp = json.dumps({"version": VERSION, "items": n_items, "seed": seed})
    if not force and marker.is_file() and marker.read_text() == stamp and manifest.is_file():
        return manifest
    rng = np.random.default_rng(seed)
    for sub in ("images", "audio", "text"):
        (data / sub).mkdir(parents=True, exist_ok=True)
    names = list(CLASSES)
    rows = []
    for i in range(n_items):
        item_id = f"t{i:04d}"
        label = names[i % len(names)]
        topic, theme, pitch = CLASSES[label]
        split = ["train"] * 14 + ["val"] * 3 + ["test"] * 3
        row = {"id": item_id, "split": split[int(rng.integers(len(split)))], "label": label, "text": "", "text_path": "", "image": "", "audio": "", "channel": ["email", "chat", "phone"][i % 3]}
        if rng.random() > 0.04:
            topic = _flip(rng, topic, ("payment", "access"))
            sentence = TEXT[topic][int(rng.integers(len(TEXT[topic])))]
            text = MESS[int(rng.integers(len(MESS)))](sentence) + DECOR[int(rng.integers(len(DECOR)))]
            if rng.random() < 0.1:
                rel = f"demo_data/text/{item_id}.txt"
                (out / rel).write_text(text, encoding="utf-8")
                row["text_path"] = rel
            else:
                row["text"] = text
        if rng.random() > 0.04:
            row["image"] = "demo_data/images/" + _image(rng, _flip(rng, theme, ("light", "dark")), data / "images" / item_id)
        if rng.random() > 0.04:
            row["audio"] = "demo_data/audio/" + _audio(rng, _flip(rng, pitch, ("low", "high")), data / "audio" / item_id)
        rows.append(row)
    # Deliberately broken items: the run must report them and go on.
    (data / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(rng.integers(0, 256, 300, dtype=np.uint8)))
    rows[5]["image"] = "demo_data/images/broken.png"
    (data / "audio" / "empty.wav").write_bytes(b"")
    rows[6]["audio"] = "demo_data/audio/empty.wav"
    (data / "text" / "latin1.txt").write_bytes("Caf\xe9 cr\xe8me: r\xe9clamation de facture".encode("latin-1"))
    rows[7]["text"], rows[7]["text_path"] = "", "demo_data/text/latin1.txt"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    manifest.write_text(buf.getvalue(), encoding="utf-8")
    marker.write_text(stamp)
    return manifest
