import copy
import json

import numpy as np
import pytest

from dummies import make_items, run, write_manifest

DIMS = {"text": 6, "image": 5, "audio": 4}


def train_cfg(**kw):
    from stages.train import TrainConfig

    return TrainConfig(**{"width": 8, "head_width": 8, "epochs": 2, "patience": 2, **kw})


def random_inputs(n, seed=0, masks=None):
    rng = np.random.default_rng(seed)
    x = {m: rng.normal(size=(n, d)).astype(np.float32) for m, d in DIMS.items()}
    for m in DIMS:
        x[f"{m}_mask"] = np.ones((n, 1), np.float32) if masks is None else masks[m]
    return x


def test_branch_builders_are_named_submodels():
    from stages.model import build_branch, build_model

    tower = build_branch("text", 6, 8, 0.1)
    assert tower.name == "text_tower" and tower.output.shape[-1] == 8
    model = build_model(DIMS, 3, train_cfg())
    names = {layer.name for layer in model.layers}
    assert {"text_tower", "image_tower", "audio_tower", "head"} <= names
    assert {t.name for t in model.inputs} >= {"text", "image", "audio", "text_mask", "image_mask", "audio_mask"}


@pytest.mark.parametrize("fusion", ["concat", "stack"])
def test_config_round_trip_and_safe_reload(tmp_path, fusion):
    import keras

    from stages.model import build_model

    model = build_model(DIMS, 3, train_cfg(fusion=fusion))
    clone = keras.Model.from_config(copy.deepcopy(model.get_config()))  # from_config consumes its argument
    assert clone.get_config() == model.get_config()
    x = random_inputs(4)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True, compile=False)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


@pytest.mark.parametrize("fusion", ["concat", "stack"])
def test_absent_modality_contributes_nothing(fusion):
    from stages.model import build_model

    model = build_model(DIMS, 3, train_cfg(fusion=fusion))
    masks = {"text": np.ones((5, 1), np.float32), "image": np.zeros((5, 1), np.float32), "audio": np.ones((5, 1), np.float32)}
    a = random_inputs(5, seed=1, masks=masks)
    b = dict(a, image=np.random.default_rng(9).normal(size=(5, 5)).astype(np.float32) * 100)
    np.testing.assert_allclose(model.predict(a, verbose=0), model.predict(b, verbose=0), atol=1e-6)
    # ...while a present modality does change the output
    c = dict(a, text=a["text"] + 5)
    assert np.abs(model.predict(a, verbose=0) - model.predict(c, verbose=0)).max() > 1e-4


def test_modality_dropout_only_in_training_and_never_all():
    from stages.model import ModalityDropout

    layer = ModalityDropout(0.9, seed=3)
    masks = np.ones((200, 3), np.float32)
    assert (np.asarray(layer(masks, training=False)) == 1).all()
    dropped = np.asarray(layer(masks, training=True))
    assert dropped.sum(1).min() >= 1 and dropped.mean() < 0.5


def test_tiny_fused_dataset_trains(tmp_path):
    from stages.train import _fit

    rng = np.random.default_rng(0)
    n = 60
    y = rng.integers(0, 2, n)
    arrays = {m: (rng.normal(size=(n, d)) + y[:, None]).astype(np.float32) for m, d in DIMS.items()}
    arrays.update({f"{m}_mask": np.ones(n, np.float32) for m in DIMS})
    split = np.array(["train"] * 40 + ["val"] * 20)
    model, history = _fit(arrays, y, split, list(DIMS), 2, train_cfg(epochs=3), None)
    assert len(history["loss"]) == 3 and history["loss"][-1] < history["loss"][0]


def test_train_end_to_end_no_leakage_reuse_and_predict(tmp_path):
    from pipeline.config import Config
    from pipeline.runner import Workspace
    from stages.fuse import MODALITIES, Stats

    data = tmp_path / "data"
    rows = make_items(data, 0, 12)
    rows[4]["image"] = ""  # a val item without a screenshot
    m = write_manifest(data / "m.csv", rows)
    opts = ["--set", "train.epochs=2", "--set", "train.ablation=false", "--set", "train.width=8"]
    report = run(m, tmp_path / "w", *opts, command="train")
    # (tones and noise images carry no words: every item lacks the speech and screen blocks)
    assert report["fuse"]["missing_modality"] == {"text": 0, "image": 1, "audio": 0, "speech": 12, "screen": 12,
                                                 "text_ml": 0, "speech_ml": 12, "screen_ml": 12}
    assert report["fuse"]["dropped"] == 0
    model_dir = tmp_path / "w" / "models" / "latest"
    for name in ("model.keras", "labels.json", "stats.npz", "config.json", "metrics.json", "history.json",
                 "learning_curves.png", "confusion_matrix.png", "ablation.png"):
        assert (model_dir / name).is_file(), name
    assert list((model_dir / "logs").rglob("*tfevents*"))
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert set(metrics["splits"]) == {"train", "val", "test"} and "fused" in metrics["ablation"]
    assert report["train"]["cached"] is False

    # No leakage: the stored statistics equal those of the train rows alone.
    stats = Stats.load(model_dir)
    train_ids = sorted(r["id"] for r in rows if r["split"] == "train")
    assert stats.train_ids == train_ids
    from dummies import SMALL

    ws = Workspace(tmp_path / "w", Config.load(None, SMALL))
    from pipeline.manifest import load
    from stages.fuse import feature_keys

    keys = feature_keys(ws, load(str(m)))
    for modality, stage in MODALITIES.items():
        if modality not in stats.mean:  # speech / screen: no train item has words here
            assert not keys[modality]
            continue
        vecs = np.stack([ws.store.read(stage, [keys[modality][i]])[keys[modality][i]][stage] for i in train_ids])
        np.testing.assert_allclose(stats.mean[modality], vecs.mean(0), rtol=1e-4, atol=1e-6 * np.abs(vecs).max())
    ws.close()

    # A missing modality is zeros with mask 0 in the fused rows; present ones have mask 1.
    fused = export_fused(m, tmp_path / "w", tmp_path, *opts)
    assert len(fused) == 12 and fused.loc["item004", "image_mask"] == 0 and not np.asarray(fused.loc["item004", "image"]).any()
    assert (fused.drop(index="item004")["image_mask"] == 1).all() and (fused[["text_mask", "audio_mask"]] == 1).all().all()

    # Same data + config: the model is reused; --force trains it again.
    again = run(m, tmp_path / "w", *opts, command="train")
    assert again["train"]["cached"] is True
    stamp = (model_dir / "model.keras").stat().st_mtime_ns
    forced = run(m, tmp_path / "w", *opts, "--force", command="train")
    assert forced["train"]["cached"] is False and forced["train"]["run"] == again["train"]["run"]
    assert (model_dir / "model.keras").stat().st_mtime_ns != stamp
    assert json.loads((model_dir / "metrics.json").read_text()) == metrics  # fixed seeds: the same model again

    # Predict on items never seen in training, one of them broken beyond use.
    new_rows = make_items(data, 100, 3)
    new_rows.append({"id": "broken", "split": "", "label": "", "text": "", "image": "img/nothing.png", "audio": ""})
    new = write_manifest(data / "new.csv", new_rows)
    out = tmp_path / "pred.csv"
    from mmpipe_cli.commands import main

    assert main(["predict", "-m", str(new), "-w", str(tmp_path / "w"), "--out", str(out), "-q"]) == 0
    import pandas as pd

    df = pd.read_csv(out, keep_default_na=False)
    assert list(df["id"]) == ["item100", "item101", "item102", "broken"]
    good = df[df["error"] == ""]
    assert len(good) == 3 and set(good["predicted"]) <= {"a", "b"}
    np.testing.assert_allclose(good[["p_a", "p_b"]].astype(float).sum(1), 1.0, atol=1e-4)
    bad = df[df["id"] == "broken"].iloc[0]
    assert bad["error"] == "NoUsableModality" and "MissingFile" in bad["message"]

    # fuse.missing = "drop": the item without a screenshot is left out of fusion and training.
    dropped = run(m, tmp_path / "w", *opts, "--set", 'fuse.missing="drop"', command="train")
    assert dropped["fuse"]["dropped"] == 1 and dropped["fuse"]["policy"] == "drop"
    fused = export_fused(m, tmp_path / "w", tmp_path, *opts, "--set", 'fuse.missing="drop"')
    assert sorted(fused.index) == sorted(r["id"] for r in rows if r["id"] != "item004")
    metrics = json.loads((tmp_path / "w" / "models" / "latest" / "metrics.json").read_text())
    assert sum(metrics["splits"][s]["n"] for s in ("train", "val", "test")) == 11


def export_fused(manifest, workdir, tmp_path, *opts):
    import pandas as pd

    out = tmp_path / "fuse.parquet"
    run(manifest, workdir, *opts, "--out", str(out), command="export fuse")
    return pd.read_parquet(out).set_index("id")
