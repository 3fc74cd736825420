"""make bench, light start (issue 20): ``+5 rows`` on a text-only manifest, against the Hugging Face
``datasets`` peer. Both sides first process N generated support messages once (so each has its cache),
then 5 rows are appended to the CSV and the features are recomputed in a fresh process, timed by wall
clock from launch to exit:

- ours: ``mmp features`` (the project's config, bert on ONNX Runtime and the multilingual stage beside
  it) on a manifest with only ``id`` and ``text`` columns: the 5 new items are computed, the N cached;
- peer: ``bench/light_peer.py``, ``load_dataset("csv", cache_dir=...)`` + ``.map(embed, batched=True,
  batch_size=32)`` with AutoTokenizer/AutoModel (the same all-MiniLM-L6-v2 folder) and torch mean
  pooling. A new CSV is a new fingerprint, so ``datasets`` recomputes every row: its real behaviour.

The ratio recorded is peer seconds / ours (goal 1/0.12: ours within 12% of the peer's time). Without the
optional ``datasets`` package the peer is skipped with a printed line and nothing is recorded.
``python -m bench.light`` runs this part alone (``BENCH_SCALE`` scales N).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCALE = float(os.environ.get("BENCH_SCALE", "1"))
ADDED = 5
GOAL = round(1 / 0.12, 2)
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}


def write_csv(path: Path, texts: list[str]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "text"])
        w.writerows((f"t{i:05d}", text) for i, text in enumerate(texts))
    return path


def timed(command: list[str]) -> tuple[float, str]:
    """(wall seconds from launch to exit, stdout) of a fresh process in the repository root."""
    env = {**os.environ, **OFFLINE, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} exited {done.returncode}: {done.stderr[-800:]}")
    return seconds, done.stdout


def ours(manifest: Path, workdir: Path) -> tuple[float, dict]:
    """(seconds, {stage: items computed}) of one ``mmp features`` run."""
    seconds, _ = timed([sys.executable, "-m", "mmpipe_cli", "features", "-q", "-m", str(manifest), "-w", str(workdir)])
    report = json.loads((workdir / "runs" / "latest.json").read_text())
    return seconds, {s: report["stages"][s]["computed"] for s in ("bert", "multilingual")}


def peer(manifest: Path, cache: Path) -> tuple[float, dict]:
    """(seconds, {rows, embedded, dim}) of one run of the datasets peer."""
    from stages.bert import BertConfig, resolve_model

    seconds, out = timed([sys.executable, "-m", "bench.light_peer", str(manifest), str(cache),
                          str(resolve_model(BertConfig().model))])
    return seconds, json.loads(out.strip().splitlines()[-1])


def bench_light(tmp: Path, record) -> dict:
    from bench.run import mixed_texts

    n = int(600 * SCALE)
    # each ticket its own text (a repeated text is one cache entry: the +5 would not all be new)
    texts = [f"{text} (order #{10000 + i})" for i, text in enumerate(mixed_texts(n + ADDED, seed=20))]
    figures: dict = {"rows": n, "added": ADDED}
    tmp.mkdir(parents=True, exist_ok=True)
    manifest = write_csv(tmp / "tickets.csv", texts[:n])
    first, _ = ours(manifest, tmp / "w")
    write_csv(manifest, texts)
    seconds, computed = ours(manifest, tmp / "w")
    if computed != {"bert": ADDED, "multilingual": ADDED}:
        raise RuntimeError(f"mmp features after +{ADDED} rows computed {computed}")
    figures.update(ours_first_s=round(first, 2), ours_s=round(seconds, 2))
    print(f"  light start: mmp features, {n} rows processed once, +{ADDED} rows: {seconds:.2f} s "
          f"(first run {figures['ours_first_s']:.2f} s)", flush=True)
    if importlib.util.find_spec("datasets") is None:
        print("  light start: peer skipped: the Hugging Face `datasets` package is not installed "
              "(pip install -e '.[bench]' to measure it)", flush=True)
        figures["peer"] = "skipped: datasets not installed"
        return figures
    peer_csv = write_csv(tmp / "peer.csv", texts[:n])
    first, first_out = peer(peer_csv, tmp / "hf-cache")
    write_csv(peer_csv, texts)
    seconds, out = peer(peer_csv, tmp / "hf-cache")
    if first_out["embedded"] != n or out["rows"] != n + ADDED:
        raise RuntimeError(f"datasets peer: first run {first_out}, after +{ADDED} rows {out}")
    figures.update(peer_first_s=round(first, 2), peer_s=round(seconds, 2), peer_embedded=out["embedded"])
    figures["ratio"] = round(seconds / figures["ours_s"], 2)
    record(f"light start: +{ADDED} rows, HF datasets / mmp features", seconds / figures["ours_s"], GOAL,
           f"{figures['ours_s']:.2f} s vs {seconds:.2f} s wall, fresh processes, {n} rows cached "
           f"(datasets re-embedded {out['embedded']} rows; first runs {figures['ours_first_s']:.1f} s vs {first:.1f} s)")
    return figures


if __name__ == "__main__":
    from bench.alone import run_alone

    run_alone(bench_light)
