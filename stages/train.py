"""train: the three-branch model on the fused features, with metrics, plots and modality ablation.

A dataset-level stage after ``fuse``; its output is a folder, ``WORKDIR/models/<run-id>/`` (``latest``
points at the newest): ``model.keras``, ``labels.json``, ``stats.npz`` + ``stats.json``
(standardization), ``config.json`` (the exact config), ``metrics.json``, ``history.json``, ``logs/``
(TensorBoard), ``learning_curves.png``, ``confusion_matrix.png``, ``ablation.png``. The run id is a
digest of the fused rows, the splits, the labels and this stage's digest (config, code, model
builders): the same inputs reuse the stored model unless ``--force``. Model builders: ``stages.model``;
plots: ``stages.plots``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.dataset import DatasetContext, DatasetResult
from pipeline.errors import ConfigError
from pipeline.keys import digest_bytes, digest_obj
from pipeline.stage import Stage, register

from .fuse import BRANCHES, MODALITIES, load_fused
from .scripts import by_script
from .splits import assign_splits  # noqa: F401  (kept importable here)

if TYPE_CHECKING:
    import numpy as np


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
    # Also train a model per branch (text; image + screen text; audio + transcript) and, where there are words,
    # the model and each branch without them, and report their test accuracy (metrics.json "ablation").
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


def _inputs(arrays: dict[str, np.ndarray], rows: np.ndarray, modalities: list[str]) -> dict[str, np.ndarray]:
    out = {}
    for m in modalities:
        out[m] = arrays[m][rows]
        out[f"{m}_mask"] = arrays[f"{m}_mask"][rows].reshape(-1, 1)
    return out


def _fit(arrays, y, split, modalities, n_classes, cfg: TrainConfig, run_dir: Path | None):
    import numpy as np
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




WORDS = ("speech", "screen", "speech_ml", "screen_ml")  # the blocks that hold the words of a voice note and of a screenshot


def ablation_sets(blocks: list[str]) -> dict[str, list[str]]:
    """The reduced models the ablation trains: each branch alone (with its words), and — where the words
    are there — the whole model and each branch without them (what the transcripts and screen text add)."""
    sets = {b: [m for m in members if m in blocks] for b, members in BRANCHES.items()}
    sets = {b: members for b, members in sets.items() if members and members != blocks}
    words = [m for m in blocks if m in WORDS]
    if words:
        sets["fused_without_words"] = [m for m in blocks if m not in WORDS]
        for b, members in BRANCHES.items():
            plain = [m for m in members if m in blocks and m not in WORDS]
            if plain and len(plain) < len([m for m in members if m in blocks]):
                sets[f"{b}_without_words"] = plain
    if "text" in blocks and "text_ml" in blocks:  # the typed message by bert alone: what the multilingual vector adds
        sets["text_without_multilingual"] = ["text"]
    return {name: members for name, members in sets.items() if members}


def predict_proba(model, arrays: dict[str, np.ndarray], modalities: list[str]) -> np.ndarray:
    """Class probabilities, 256 rows per batch. The rows go in as a batched ``tf.data`` dataset: given
    numpy arrays, Keras would build a parallel-map pipeline that TensorFlow's op determinism rewrites,
    logging an "E0000 ... use_unbounded_threadpool" line that reads like an error."""
    import numpy as np
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # a smaller last batch retraces once; that is expected, not news
    rows = np.arange(len(next(iter(arrays.values()))))
    batches = tf.data.Dataset.from_tensor_slices(_inputs(arrays, rows, modalities)).batch(256)
    return np.asarray(model.predict(batches, verbose=0))


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


@register
class Train(Stage):
    name = "train"
    version = "1"
    inputs = ("fuse",)
    Config = TrainConfig
    dataset_level = True
    per_item_rows = False

    def identity(self) -> dict[str, Any]:
        here = Path(__file__).parent  # the model builders and plots shape the output too
        return {name: digest_bytes((here / name).read_bytes()) for name in ("model.py", "plots.py")}

    def run_dataset(self, ctx: DatasetContext) -> DatasetResult:
        fused = ctx.results.get("fuse")
        if fused is None or fused.value is None:
            if ctx.dry:
                return DatasetResult(note="waiting on fuse")
            raise ConfigError("train: fuse produced no rows to train on")
        kept = [(item, key) for item, key in fused.value.kept if item.label]
        if not kept:
            if ctx.dry:
                return DatasetResult(note="no labelled item to train on")
            raise ConfigError("train: no item has a label" if not any(i.label for i in ctx.items)
                              else "train: no labelled item has any usable modality after fusion")
        labels = sorted({i.label for i, _ in kept})
        fused_digests = ctx.digests["fuse"]
        if any(k not in fused_digests for _, k in kept):
            return DatasetResult(note="waiting on fuse")  # dry plans only: a run has just committed every row
        rows = [[i.id, fused_digests[k], i.split] for i, k in kept]
        run_id = digest_obj({"fused": rows, "train": self.digest(), "labels": labels})[:16]
        models = ctx.workdir / "models"
        run_dir = models / run_id
        if (run_dir / "metrics.json").is_file() and not ctx.force:
            if ctx.dry:
                return DatasetResult(note=f"model {run_id} is up to date ({run_dir})")
            _point_latest(models, run_id)
            ctx.report.data["train"] = {"run": str(run_dir), "cached": True}
            return DatasetResult(value=run_dir, cached=1)
        if ctx.dry:
            return DatasetResult(note=f"to train: model {run_id} ({len(kept)} labelled items; fused data or config changed)")
        started = time.monotonic()
        ablation = fit_and_save(ctx, kept, labels, fused.value.stats, run_dir)
        _point_latest(models, run_id)
        ctx.report.data["train"] = {"run": str(run_dir), "cached": False, "seconds": round(time.monotonic() - started, 1),
                                    "test_accuracy": ablation}
        return DatasetResult(value=run_dir, computed=1)


def fit_and_save(ctx: DatasetContext, kept, labels: list[str], stats, run_dir: Path) -> dict[str, Any]:
    """Train the model (and the ablation models), write every output into ``run_dir`` atomically."""
    import numpy as np

    cfg: TrainConfig = ctx.config["train"]
    tmp_dir = run_dir.with_name(run_dir.name + ".partial")
    tmp_dir.mkdir(parents=True, exist_ok=True)
    arrays = load_fused(ctx, kept)
    modalities = [m for m in MODALITIES if m in arrays]
    y = np.array([labels.index(i.label) for i, _ in kept])
    split = np.array([i.split for i, _ in kept])
    if not (split == "val").any():
        raise ConfigError("train: no item has split 'val' (needed for early stopping)")
    model, history = _fit(arrays, y, split, modalities, len(labels), cfg, tmp_dir)
    probs = predict_proba(model, arrays, modalities)
    pred = probs.argmax(1)
    metrics: dict[str, Any] = {"labels": labels, "modalities": modalities, "fusion": cfg.fusion,
                               "splits": {s: _scores(y[split == s], pred[split == s], labels) for s in ("train", "val", "test")}}
    test = split == "test"
    ablation = {"fused": metrics["splits"]["test"].get("accuracy")}
    items = [i for i, _ in kept]
    scripts = {"fused": by_script(items, y, pred, test, labels)}  # test accuracy, Chinese vs English messages
    if cfg.ablation and len(modalities) > 1:
        for name, blocks in ablation_sets(modalities).items():
            single, _ = _fit(arrays, y, split, blocks, len(labels), cfg, None)
            p = predict_proba(single, arrays, blocks).argmax(1)
            ablation[name] = round(float((p[test] == y[test]).mean()), 4) if test.any() else None
            if name.startswith("text"):
                scripts[name] = by_script(items, y, p, test, labels)
    metrics["ablation"] = ablation
    metrics["by_script"] = scripts
    model.save(tmp_dir / "model.keras")
    stats.save(tmp_dir)
    (tmp_dir / "labels.json").write_text(json.dumps(labels))
    (tmp_dir / "config.json").write_text(json.dumps(ctx.config.to_dict(), indent=2))
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
    return ablation


def _point_latest(models: Path, run_id: str) -> None:
    tmp = models / ".latest.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(run_id, tmp)
    os.replace(tmp, models / "latest")
