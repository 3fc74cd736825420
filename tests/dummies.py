"""Tiny generated media for tests: nothing downloaded, everything written by code."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

import stages  # noqa: F401  (registers the stages and their config sections, as the CLI does)
from mmpipe_cli.commands import main
from tiny_models import SHARED_TINY_BERT

# Small sizes and a tiny BERT keep the suite fast; the code paths are the real ones.
SMALL = [
    "clean_image.size=32",
    "clean_audio.duration=0.5",
    "clean_audio.sample_rate=8000",
    "mfcc.n_fft=256",
    "mfcc.hop_length=128",
    "mfcc.n_mels=32",
    "mfcc.n_mfcc=13",
    "run.lock_timeout=0.5",
    'cnn.weights="none"',
    "cnn.batch_size=4",
    f"bert.model={SHARED_TINY_BERT}",
    'transcribe.model="package:whisper-tiny.en"',  # the packaged tiny.en: real weights, 0.3 s to load
]
ALL_STAGES = ["clean_text", "bert", "clean_image", "cnn", "clean_audio", "mfcc"]
# The words stages run in every `mmp features` too; on these tests' tones and noise images they find no
# words (NoWords, not failures), so counts() leaves them out; their own tests check them.
WORD_STAGES = ["transcribe", "bert_speech", "ocr", "bert_screen"]
# The multilingual stages run beside bert in every `mmp features` (numpy, ~1 s to load); counts() leaves
# them out too, so these tests keep counting what they count; tests/test_multilingual*.py check them.
MULTILINGUAL_STAGES = ["multilingual", "multilingual_speech", "multilingual_screen"]


def small_args(*extra: str) -> list[str]:
    """SMALL as --set arguments, then extra ones."""
    return [a for s in SMALL for a in ("--set", s)] + list(extra)


def only(**computed: int) -> dict[str, int]:
    """Expected per-stage counts: the given ones, zero elsewhere."""
    return {s: computed.get(s, 0) for s in ALL_STAGES}


def write_image(path: Path, seed: int, size=(40, 30), mode="RGB") -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(arr, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def write_audio(path: Path, seed: int, sr=8000, seconds=0.4, channels=1, subtype="PCM_16") -> Path:
    import soundfile as sf

    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    x = 0.5 * np.sin(2 * np.pi * rng.uniform(200, 1000) * t) + rng.normal(0, 0.01, t.size)
    if channels == 2:
        x = np.stack([x, 0.5 * x], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x.astype(np.float32), sr, subtype=subtype)
    return path


def make_items(root: Path, start: int, count: int) -> list[dict[str, str]]:
    rows = []
    for i in range(start, start + count):
        rows.append(
            {
                "id": f"item{i:03d}",
                "split": ("train", "val", "test")[i % 3],
                "label": "ab"[i % 2],
                "text": f"message number {i} &amp; <b>bold</b>",
                "image": str(write_image(root / "img" / f"{i}.png", i).relative_to(root)),
                "audio": str(write_audio(root / "aud" / f"{i}.wav", i).relative_to(root)),
            }
        )
    return rows


def write_manifest(path: Path, rows: list[dict[str, str]]) -> Path:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return path


def run(manifest: Path | list[Path], workdir: Path, *extra: str, command: str = "features", expect: int = 0) -> dict:
    """Run the real CLI; return the run report it wrote."""
    manifests = manifest if isinstance(manifest, list) else [manifest]
    args = command.split()
    for m in manifests:
        args += ["--manifest", str(m)]
    args += ["--workdir", str(workdir), "--quiet"]
    for s in SMALL:
        args += ["--set", s]
    args += list(extra)
    code = main(args)
    if code != expect:
        raise AssertionError(f"mmp {' '.join(args)} exited {code}, expected {expect}")
    return json.loads((workdir / "runs" / "latest.json").read_text())


def counts(report: dict, field: str) -> dict[str, int]:
    return {name: s[field] for name, s in report["stages"].items() if name not in WORD_STAGES + MULTILINGUAL_STAGES}
