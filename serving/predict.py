"""predict: new raw items -> cleaning and features through the cache -> stored standardization ->
the trained model -> one row per item (id, predicted label, a probability per label, the modalities the
model missed, ``transcript``: what the voice note says, ``screen_text``: the text on the screenshot
(from the transcribe / ocr caches; empty when the item has none or no words), error and message).

The feature and fusion settings come from the model folder's ``config.json``, so new items are
processed exactly as the training items were. Items that cannot be predicted get an error row.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.config import Config
from pipeline.errors import ConfigError

from stages.fuse import MODALITIES, Stats, load_fused, run_fuse

from . import settings  # noqa: F401  (registers [serve]: a model's config.json records every section)


def load_trained(model_dir: Path):
    import keras

    from stages import model as _layers  # noqa: F401  (registers the custom layers)

    if not (model_dir / "model.keras").is_file():
        raise ConfigError(f"predict: {model_dir} holds no model.keras (train one with 'mmp train')")
    model = keras.saving.load_model(model_dir / "model.keras", safe_mode=True, compile=False)
    labels = json.loads((model_dir / "labels.json").read_text())
    return model, labels, Stats.load(model_dir)


def model_config(model_dir: Path) -> Config:
    return Config.from_dict(json.loads((model_dir / "config.json").read_text()))


def predict(ws, items, model_dir: Path, report) -> list[dict]:
    from stages import FEATURES

    from stages.train import predict_proba

    model, labels, stats = load_trained(model_dir)
    ws.run(FEATURES, items, report)
    kept, _ = run_fuse(ws, items, report, stats=stats)
    words = cached_words(ws, items)
    model_modalities = [m for m in MODALITIES if m in stats.mean]
    problems: dict[str, list[str]] = {}
    for f in report.data["failures"]:
        problems.setdefault(f["id"], []).append(f"{f['stage']}: {f['error']}: {f['message']}")
    rows: dict[str, dict] = {}
    if kept:
        arrays = load_fused(ws, kept)
        modalities = [m for m in MODALITIES if m in arrays]
        probs = predict_proba(model, arrays, modalities)
        for row, ((item, _), p) in enumerate(zip(kept, probs)):
            absent = [m for m in modalities if arrays[f"{m}_mask"][row] == 0]
            rows[item.id] = {"id": item.id, "predicted": labels[int(np.argmax(p))],
                             **{f"p_{label}": round(float(v), 6) for label, v in zip(labels, p)},
                             "missing_modalities": ",".join(absent), **words[item.id], "error": "", "message": ""}
    out = []
    for item in items:
        if item.id in rows:
            out.append(rows[item.id])
        else:
            why = "; ".join(problems.get(item.id, [])) or "the item has no usable modality"
            out.append({"id": item.id, "predicted": "", **{f"p_{label}": None for label in labels},
                        "missing_modalities": ",".join(model_modalities), **words[item.id], "error": "NoUsableModality",
                        "message": f"item {item.id}: {why}"})
    return out


WORD_COLUMNS = {"transcript": "transcribe", "screen_text": "ocr"}


def cached_words(ws, items) -> dict[str, dict[str, str]]:
    """item id -> {"transcript": ..., "screen_text": ...}: the ``text`` of the item's transcribe / ocr
    records (committed by the run before); "" for an item without a voice note / screenshot, with no words
    in it (``NoWords``), or whose stage failed."""
    from pipeline.errors import CacheCorruptError
    from pipeline.stage import STAGES

    names = [stage for stage in WORD_COLUMNS.values() if stage in STAGES]
    keys = {p.stage.name: p.keys for p in ws.plan(names, items, dry=True) if p.stage.name in names}
    out = {item.id: dict.fromkeys(WORD_COLUMNS, "") for item in items}
    for column, stage in WORD_COLUMNS.items():
        by_item = keys.get(stage, {})
        done = ws.store.committed(stage)
        wanted = sorted({k for k in by_item.values() if k in done})
        texts = {}
        for start in range(0, len(wanted), 512):
            try:
                texts.update({k: r["text"] for k, r in ws.store.read(stage, wanted[start : start + 512]).items()})
            except (KeyError, CacheCorruptError):  # removed meanwhile: those items show no words
                continue
        for item_id, key in by_item.items():
            if item_id in out:
                out[item_id][column] = texts.get(key, "")
    return out


def write_rows(rows: list[dict], out: Path) -> None:
    import pandas as pd

    out.parent.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows)
    tmp = out.with_name(out.name + ".tmp")
    if out.suffix == ".parquet":
        df.to_parquet(tmp, index=False)
    else:
        df.to_csv(tmp, index=False)
    tmp.replace(out)
