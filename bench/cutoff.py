"""Early cutoff on the demo: raw changes whose cleaned output is identical must stop at the cleaning stage.

On a fresh copy of the demo (all stages computed first), each change below is followed by one
`mmp features` run, and the items computed per stage are recorded:

- CRLF -> LF inside every text (inline and files): `bert` must compute 0;
- every PNG re-saved with another compression level: `cnn` must compute 0;
- every WAV converted to FLAC (same samples): `mfcc` must compute 0;
- `clean_text.max_chars` raised (40 -> the default, in a work directory of its own): `bert` must
  compute exactly the items whose cleaned text changed (counted by comparing two exports of `clean_text`).

Run alone with ``python -m bench.cutoff``; ``make bench`` calls ``run_cutoff`` and writes the figures
into bench/results/bench.json.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE = ["-q", "--set", 'cnn.weights="none"']


def _features(manifest: Path, workdir: Path, *extra: str, command: str = "features") -> dict:
    from mmpipe_cli.commands import main

    code = main([*command.split(), "-m", str(manifest), "-w", str(workdir), *BASE, *extra])
    if code not in (0, 1):
        raise RuntimeError(f"mmp features exited {code}")
    return json.loads((workdir / "runs" / "latest.json").read_text())


def _run_bert(manifest: Path, workdir: Path, *extra: str) -> dict:
    return _features(manifest, workdir, *extra, command="run bert")


def _computed(report: dict) -> dict[str, int]:
    return {name: s["computed"] for name, s in report["stages"].items()}


def _rewrite_manifest(manifest: Path, change) -> None:
    with open(manifest, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, list(reader)
    for row in rows:
        change(row)
    with open(manifest, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _crlf_to_lf(data: Path, manifest: Path) -> int:
    changed = 0

    def fix(row):
        nonlocal changed
        if "\r\n" in row["text"]:
            row["text"] = row["text"].replace("\r\n", "\n")
            changed += 1

    _rewrite_manifest(manifest, fix)
    for path in (data / "demo_data" / "text").iterdir():
        raw = path.read_bytes()
        if b"\r\n" in raw:
            path.write_bytes(raw.replace(b"\r\n", b"\n"))
            changed += 1
    return changed


def _resave_pngs(data: Path) -> int:
    from PIL import Image

    paths = sorted((data / "demo_data" / "images").glob("*.png"))
    for path in paths:
        try:
            with Image.open(path) as img:
                img.load()
                img.save(path, compress_level=9, optimize=True)
        except OSError:
            pass  # the demo's deliberately corrupt PNG stays as it is
    return len(paths)


def _wav_to_flac(data: Path, manifest: Path) -> int:
    import soundfile as sf

    converted: dict[str, str] = {}
    for path in sorted((data / "demo_data" / "audio").glob("*.wav")):
        try:
            info = sf.info(path)
            if info.subtype not in ("PCM_16", "PCM_24"):
                continue  # FLAC holds integer samples only: float WAVs stay WAV
            samples, rate = sf.read(path, dtype="int32")
        except RuntimeError:
            continue  # the demo's deliberately empty WAV
        sf.write(path.with_suffix(".flac"), samples, rate, subtype=info.subtype)
        converted[f"demo_data/audio/{path.name}"] = f"demo_data/audio/{path.with_suffix('.flac').name}"

    def point(row):
        row["audio"] = converted.get(row["audio"], row["audio"])

    _rewrite_manifest(manifest, point)
    return len(converted)


def _export_texts(manifest: Path, workdir: Path, out: Path, *extra: str) -> dict[str, str]:
    import pandas as pd

    from mmpipe_cli.commands import main

    main(["export", "clean_text", "-m", str(manifest), "-w", str(workdir), "--out", str(out), *BASE, *extra])
    return dict(zip(*(pd.read_parquet(out)[c] for c in ("id", "text"))))


def run_cutoff(tmp: Path) -> list[dict]:
    from mmpipe_cli.commands import main

    data = tmp / "cutoff-demo"
    main(["demo-data", "--out", str(data)])
    manifest, work = data / "demo.csv", tmp / "cutoff-work"
    _features(manifest, work)
    figures = []

    def figure(name: str, changed: int, report: dict, stage: str, expected: int) -> None:
        got = _computed(report)
        figures.append({"name": name, "inputs_changed": changed, "computed": got, "cutoff": report["stages"][stage]["cutoff"],
                        "stage": stage, "stage_computed": got[stage], "expected": expected, "met": got[stage] == expected})
        print(f"  {name:<44} {stage} computed {got[stage]:>4} (expected {expected}); all: {got}", flush=True)

    n = _crlf_to_lf(data, manifest)
    figure("CRLF -> LF in every text", n, _features(manifest, work), "bert", 0)
    n = _resave_pngs(data)
    figure("every PNG re-saved, other compression", n, _features(manifest, work), "cnn", 0)
    n = _wav_to_flac(data, manifest)
    figure("every integer WAV converted to FLAC", n, _features(manifest, work), "mfcc", 0)

    # In a work directory of its own, so no earlier run holds embeddings of the longer texts.
    chars, low = tmp / "cutoff-chars", ["--set", "clean_text.max_chars=40"]
    _run_bert(manifest, chars, *low)
    before = _export_texts(manifest, chars, tmp / "low.parquet", *low)
    report = _run_bert(manifest, chars)
    after = _export_texts(manifest, chars, tmp / "default.parquet")
    changed = sum(1 for i, text in after.items() if before.get(i) != text)
    figure("clean_text.max_chars raised 40 -> 20000", changed, report, "bert", changed)
    return figures


def main() -> int:
    import tempfile

    sys.path.insert(0, str(ROOT))
    import stages  # noqa: F401

    with tempfile.TemporaryDirectory() as d:
        figures = run_cutoff(Path(d))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "cutoff.json").write_text(json.dumps(figures, indent=2))
    return 0 if all(f["met"] for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
