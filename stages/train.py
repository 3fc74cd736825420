"""train: the three-branch model on the fused features, with metrics, plots and modality ablation.

Outputs under ``WORKDIR/models/<run-id>/`` (``latest`` points at the newest): ``model.keras``,
``labels.json``, ``stats.npz`` + ``stats.json`` (standardization), ``config.json`` (the exact config),
``metrics.json``, ``history.json``, ``logs/`` (TensorBoard), ``learning_curves.png``,
``confusion_matrix.png``, ``ablation.png``. The run id is a digest of the fused data, the splits and
the training config: the same inputs reuse the stored model unless ``--force``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import register_section
from pipeline.errors import ConfigError
from pipeline.keys import digest_obj

from .fuse import MODALITIES


@dataclass
class TrainConfig:
    # concat: towers concatenated (+ masks) | stack: projected to `width`, stacked, attention-pooled
    fusion: str = "concat"
    width: int = 64
    head_width: int = 64
    dropout: float = 0.3
    # Probability of dropping a present modality per sample while training.
    modality_dropout: float = 0.15
    epochs: int = 80
    batch_size: int = 32
    learning_rate: float = 0.001
    patience: int = 12
    seed: int = 0
    # Also train text-only, image-only and audio-only models and report their test accuracy.
    ablation: bool = True
    # Used only when the manifest has no split column values: a seeded stratified split.
    val_fraction: float = 0.15
    test_fraction: float = 0.15

    def validate(self) -> str | None:
        if self.fusion not in ("concat", "stack"):
            return f"fusion must be concat or stack, not {self.fusion!r}"
        if not 0 <= self.dropout < 1 or not 0 <= self.modality_dropout < 1:
            return "dropout and modality_dropout must be within [0, 1)"
        return None


register_section("train", TrainConfig)


def assign_splits(items, cfg: TrainConfig) -> dict[str, str]:
    """The manifest's splits; a seeded stratified split for items without one."""
    given = {i.id: i.split for i in items if i.split}
    missing = [i for i in items if not i.split and i.label]
    if missing:
        from sklearn.model_selection import train_test_split

        ids, labels = [i.id for i in missing], [i.label for i in missing]
        strat = labels if min(labels.count(x) for x in set(labels)) >= 3 else None
        rest, test = train_test_split(ids, test_size=cfg.test_fraction, random_state=cfg.seed, stratify=strat)
        rest_labels = [labels[ids.index(r)] for r in rest] if strat else None
        train, val = train_test_split(rest, test_size=cfg.val_fraction / (1 - cfg.test_fraction), random_state=cfg.seed,
                                      stratify=rest_labels)
        given.update({i: "train" for i in train} | {i: "val" for i in val} | {i: "test" for i in test})
    return given


def _inputs(arrays: dict[str, np.ndarray], rows: np.ndarray, modalities: list[str]) -> dict[str, np.ndarray]:
    out = {}
    for m in modalities:
        out[m] = arrays[m][rows]
        out[f"{m}_mask"] = arrays[f"{m}_mask"][rows].reshape(-1, 1)
    return out


def _fit(arrays, y, split, modalities, n_classes, cfg: TrainConfig, run_dir: Path | None):
    import keras
    import tensorflow as tf

    from .model import build_model

    keras.utils.set_random_seed(cfg.seed)
    tf.config.experimental.enable_op_determinism()  # same seed, same data -> same weights and metrics
    dims = {m: arrays[m].shape[1] for m in modalities}
    model = build_model(dims, n_classes, cfg)
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    tr, va = np.flatnonzero(split == "train"), np.flatnonzero(split == "val")
    train_ds = (tf.data.Dataset.from_tensor_slices((_inputs(arrays, tr, modalities), y[tr]))
                .shuffle(len(tr), seed=cfg.seed, reshuffle_each_iteration=True).batch(cfg.batch_size))
    val_ds = tf.data.Dataset.from_tensor_slices((_inputs(arrays, va, modalities), y[va])).batch(256)
    callbacks = [keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.patience, restore_best_weights=True)]
    if run_dir is not None:
        callbacks += [keras.callbacks.ModelCheckpoint(str(run_dir / "best.keras"), monitor="val_loss", save_best_only=True),
                      keras.callbacks.TensorBoard(log_dir=str(run_dir / "logs"), write_graph=False)]
    history = model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, callbacks=callbacks, verbose=0, shuffle=False)
    return model, history.history




def predict_proba(model, arrays: dict[str, np.ndarray], modalities: list[str]) -> np.ndarray:
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # a smaller last batch retraces once; that is expected, not news
    rows = np.arange(len(next(iter(arrays.values()))))
    return np.asarray(model.predict(_inputs(arrays, rows, modalities), batch_size=256, verbose=0))


def _scores(y_true, y_pred, labels: list[str]) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    if len(y_true) == 0:
        return {"n": 0}
    idx = list(range(len(labels)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=idx, zero_division=0)
    return {
        "n": int(len(y_true)),
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 4),
        "macro_f1": round(float(f1_score(y_true, y_pred, labels=idx, average="macro", zero_division=0)), 4),
        "per_class": {labels[i]: {"precision": round(float(p[i]), 4), "recall": round(float(r[i]), 4),
                                  "f1": round(float(f[i]), 4), "support": int(s[i])} for i in idx},
    }


def train(ws, items, report, force: bool = False) -> Path:
    """Fuse, then train (or reuse) the model; returns the run folder."""
    from .fuse import load_fused, run_fuse

    cfg: TrainConfig = ws.config["train"]
    splits = assign_splits(items, cfg)
    labelled = [i for i in items if i.label]
    if not labelled:
        raise ConfigError("train: no item has a label")
    kept, stats = run_fuse(ws, [_with_split(i, splits) for i in labelled], report)
    if not kept:
        raise ConfigError("train: no item has any usable modality after fusion")
    labels = sorted({i.label for i, _ in kept})
    run_id = digest_obj({"fused": [[i.id, k, splits.get(i.id, "")] for i, k in kept], "train": asdict(cfg),
                         "labels": labels})[:16]
    run_dir = ws.workdir / "models" / run_id
    if (run_dir / "metrics.json").is_file() and not force:
        _point_latest(ws.workdir / "models", run_id)
        report.data["train"] = {"run": str(run_dir), "cached": True}
        return run_dir
    started = time.monotonic()
    tmp_dir = run_dir.with_name(run_id + ".partial")
    tmp_dir.mkdir(parents=True, exist_ok=True)
    arrays = load_fused(ws, kept)
    modalities = [m for m in MODALITIES if m in arrays]
    y = np.array([labels.index(i.label) for i, _ in kept])
    split = np.array([splits.get(i.id, "") for i, _ in kept])
    if not (split == "val").any():
        raise ConfigError("train: no item has split 'val' (needed for early stopping)")
    model, history = _fit(arrays, y, split, modalities, len(labels), cfg, tmp_dir)
    probs = predict_proba(model, arrays, modalities)
    pred = probs.argmax(1)
    metrics: dict[str, Any] = {"labels": labels, "modalities": modalities, "fusion": cfg.fusion,
                               "splits": {s: _scores(y[split == s], pred[split == s], labels) for s in ("train", "val", "test")}}
    test = split == "test"
    ablation = {"fused": metrics["splits"]["test"].get("accuracy")}
    if cfg.ablation and len(modalities) > 1:
        for m in modalities:
            single, _ = _fit(arrays, y, split, [m], len(labels), cfg, None)
            p = predict_proba(single, arrays, [m]).argmax(1)
            ablation[m] = round(float((p[test] == y[test]).mean()), 4) if test.any() else None
    metrics["ablation"] = ablation
    model.save(tmp_dir / "model.keras")
    stats.save(tmp_dir)
    (tmp_dir / "labels.json").write_text(json.dumps(labels))
    (tmp_dir / "config.json").write_text(json.dumps(ws.config.to_dict(), indent=2))
    (tmp_dir / "history.json").write_text(json.dumps({k: [float(v) for v in vs] for k, vs in history.items()}, indent=2))
    (tmp_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    from .plots import plot_ablation, plot_confusion, plot_history

    plot_history(history, tmp_dir / "learning_curves.png")
    plot_confusion(y[test], pred[test], labels, tmp_dir / "confusion_matrix.png")
    plot_ablation(ablation, tmp_dir / "ablation.png")
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    os.replace(tmp_dir, run_dir)
    _point_latest(ws.workdir / "models", run_id)
    report.data["train"] = {"run": str(run_dir), "cached": False, "seconds": round(time.monotonic() - started, 1),
                            "test_accuracy": ablation}
    return run_dir


def _with_split(item, splits: dict[str, str]):
    from dataclasses import replace

    return replace(item, split=splits.get(item.id, item.split))


def _point_latest(models: Path, run_id: str) -> None:
    tmp = models / ".latest.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(run_id, tmp)
    os.replace(tmp, models / "latest")
