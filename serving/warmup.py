"""Generated warm-up samples (a message, a PNG, a WAV) the server runs once at start-up, so every
model is loaded and traced before the first request. Written by code; nothing is read from the data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_samples(folder: Path) -> dict[str, str]:
    """modality -> file name inside ``folder``."""
    import soundfile as sf
    from PIL import Image

    (folder / "text.txt").write_text("warm-up message: cannot log in after the payment", encoding="utf-8")
    ramp = np.linspace(0, 255, 64 * 48, dtype=np.float32).reshape(48, 64)
    Image.fromarray(np.stack([ramp, ramp[::-1], np.full_like(ramp, 128)], -1).astype(np.uint8)).save(folder / "image.png")
    t = np.arange(16000) / 16000
    sf.write(folder / "audio.wav", (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    return {"text": "text.txt", "image": "image.png", "audio": "audio.wav"}
