"""Fusion, ablation, the seeded stratified split and prediction, through the CLI on tiny data built so
that no single modality can separate the four classes (as in the demo): text tells payment from access,
the screenshot light from dark, the voice pitch is their parity."""

import json

import numpy as np
import pandas as pd
import pytest

from dummies import counts, run, write_manifest

CLASSES = {"pay_light": (0, 0), "pay_dark": (0, 1), "acc_light": (1, 0), "acc_dark": (1, 1)}  # (topic, theme)
TOPIC_WORDS = (["payment", "refund", "bread"], ["login", "password", "cannot"])  # in the tiny BERT's vocabulary
FILLER = ["the", "a", "man", "is", "of", "app"]
PER_CLASS = 14
TRAIN = [a for s in ("train.epochs=25", "train.patience=8", "train.learning_rate=0.01", "train.width=16", "train.head_width=16",
                      "train.val_fraction=0.25", "train.test_fraction=0.25") for a in ("--set", s)]


def ticket(root, item_id: str, topic: int, theme: int, rng) -> dict[str, str]:
    """One item: a text on its topic, a light or dark screenshot, a low or high voice (parity of the two)."""
    import soundfile as sf
    from PIL import Image

    words = [str(w) for w in rng.choice(TOPIC_WORDS[topic], 3)] + [str(rng.choice(FILLER))]
    rng.shuffle(words)
    base = 215 if theme == 0 else 40
    pixels = np.clip(base + rng.normal(0, 12, (30, 40, 3)), 0, 255).astype(np.uint8)
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "aud").mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(root / "img" / f"{item_id}.png")
    sr, pitch = 8000, (220.0 if topic == theme else 1100.0) * rng.uniform(0.95, 1.05)
    t = np.arange(int(sr * 0.4)) / sr
    sf.write(root / "aud" / f"{item_id}.wav", (0.5 * np.sin(2 * np.pi * pitch * t) + rng.normal(0, 0.01, t.size)).astype(np.float32), sr)
    return {"id": item_id, "text": " ".join(words), "image": f"img/{item_id}.png", "audio": f"aud/{item_id}.wav"}


def xor_items(root, per_class: int, prefix: str = "t", seed: int = 0) -> list[dict[str, str]]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(per_class):
        for label, (topic, theme) in CLASSES.items():
            rows.append({**ticket(root, f"{prefix}{len(rows):03d}", topic, theme, rng), "label": label})
    return rows


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One training run with ablation on; items carry no split, so the seeded stratified split applies."""
    tmp = tmp_path_factory.mktemp("fusion")
    rows = xor_items(tmp / "data", PER_CLASS)
    m = write_manifest(tmp / "data" / "m.csv", [{**r, "split": ""} for r in rows])
    report = run(m, tmp / "w", *TRAIN, command="train")
    return {"tmp": tmp, "rows": rows, "manifest": m, "report": report, "model": tmp / "w" / "models" / "latest"}


def test_fused_model_beats_every_single_modality(trained):
    metrics = json.loads((trained["model"] / "metrics.json").read_text())
    ablation = metrics["ablation"]
    assert set(ablation) == {"fused", "text", "image", "audio", "text_without_multilingual"}
    assert (trained["model"] / "ablation.png").is_file()
    assert trained["report"]["train"]["test_accuracy"] == ablation
    # Each modality alone tells two pairs of classes apart (~50%); together they separate all four.
    assert ablation["fused"] >= 0.9, ablation
    assert all(ablation[m] <= min(0.75, ablation["fused"] - 0.25) for m in ("text", "image", "audio")), ablation
    assert metrics["splits"]["test"]["macro_f1"] >= 0.85


def test_items_without_a_split_get_a_seeded_stratified_split(trained):
    from pipeline.manifest import load
    from stages.train import TrainConfig, assign_splits

    metrics = json.loads((trained["model"] / "metrics.json").read_text())
    sizes = {s: metrics["splits"][s]["n"] for s in ("train", "val", "test")}
    assert sizes == {"train": 28, "val": 14, "test": 14}
    for split in ("train", "test"):  # every class in proportion (val: 14 items over 4 classes, 3 or 4 each)
        support = [c["support"] for c in metrics["splits"][split]["per_class"].values()]
        assert max(support) - min(support) <= 1, (split, support)
    # The split the CLI trained on is the seeded one: the same seed gives it again, another seed another.
    stats = json.loads((trained["model"] / "stats.json").read_text())
    items = load(str(trained["manifest"]))
    cfg = dict(val_fraction=0.25, test_fraction=0.25)
    seed0 = assign_splits(items, TrainConfig(seed=0, **cfg))
    assert stats["train_ids"] == sorted(i for i, s in seed0.items() if s == "train")
    assert assign_splits(items, TrainConfig(seed=0, **cfg)) == seed0
    assert assign_splits(items, TrainConfig(seed=1, **cfg)) != seed0


def test_predict_is_the_model_applied_to_the_standardized_fused_features(trained, tmp_path):
    """`mmp predict` on new items equals the saved model applied, by hand, to the stored standardization
    of each item's features, with zeros and mask 0 for a missing modality."""
    import keras

    import stages.model  # noqa: F401  (registers the model's custom layers)

    data = trained["tmp"] / "data"
    new = xor_items(data, 2, prefix="new", seed=5)[:4]
    new[1]["image"] = ""  # no screenshot
    (data / "aud" / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
    new[2]["audio"] = "aud/broken.wav"  # a voice note that fails to decode
    new.append({"id": "nothing", "text": "", "image": "img/missing.png", "audio": "", "label": ""})
    manifest = write_manifest(data / "new.csv", new)
    out = tmp_path / "pred.csv"
    run(manifest, trained["tmp"] / "w", "--model", str(trained["model"]), "--out", str(out), command="predict")
    got = pd.read_csv(out, keep_default_na=False).set_index("id")
    assert list(got.index) == [r["id"] for r in new]
    # (the words blocks, absent on these tones and noise images, are not listed: the model never had them)
    assert list(got["missing_modalities"]) == ["", "image", "audio", "", "text,image,audio,text_ml"]
    assert got.loc["nothing", "error"] == "NoUsableModality" and "MissingFile" in got.loc["nothing", "message"]

    # By hand: features from the cache, the model folder's statistics, the model itself.
    labels = json.loads((trained["model"] / "labels.json").read_text())
    with np.load(trained["model"] / "stats.npz", allow_pickle=False) as z:
        stats = {k: z[k] for k in z.files}
    features = {}
    for modality, stage in (("text", "bert"), ("image", "cnn"), ("audio", "mfcc"), ("text_ml", "multilingual")):
        path = tmp_path / f"{stage}.parquet"
        run(manifest, trained["tmp"] / "w", "--out", str(path), command=f"export {stage}")
        features[modality] = pd.read_parquet(path).set_index("id")[stage]
    ids = [r["id"] for r in new[:4]]
    inputs = {}
    for modality, column in features.items():
        dim = stats[f"mean_{modality}"].shape[0]
        present = np.array([i in column.index for i in ids], np.float32)
        inputs[modality] = np.stack([(np.asarray(column[i]) - stats[f"mean_{modality}"]) / stats[f"std_{modality}"]
                                     if i in column.index else np.zeros(dim) for i in ids]).astype(np.float32)
        inputs[f"{modality}_mask"] = present[:, None]
    assert inputs["image_mask"][:, 0].tolist() == [1, 0, 1, 1] and inputs["audio_mask"][:, 0].tolist() == [1, 1, 0, 1]
    model = keras.saving.load_model(trained["model"] / "model.keras", safe_mode=True, compile=False)
    want = np.asarray(model.predict(inputs, verbose=0))
    np.testing.assert_allclose(got.loc[ids, [f"p_{label}" for label in labels]].astype(float).to_numpy(), want, atol=2e-6)
    assert list(got.loc[ids, "predicted"]) == [labels[k] for k in want.argmax(1)]
    assert [got.loc[i, "predicted"] for i in (ids[0], ids[3])] == [new[0]["label"], new[3]["label"]]  # complete items: right


def entries(workdir) -> dict[str, int]:
    import sqlite3

    db = sqlite3.connect(workdir / "cache" / "index.sqlite")
    try:
        return dict(db.execute("SELECT stage, count(*) FROM entries GROUP BY stage").fetchall())
    finally:
        db.close()


def test_gc_keeps_everything_the_manifest_and_config_use(trained, capsys):
    """gc removes exactly what the manifest + config no longer reference (here: what predict added for
    other items) and keeps everything they do, fused rows included; --dry-run only counts."""
    w = trained["tmp"] / "w"
    before = entries(w)
    capsys.readouterr()
    run(trained["manifest"], w, *TRAIN, command="gc --dry-run")
    would = {line.split(":")[0]: int(line.split()[1]) for line in capsys.readouterr().out.splitlines() if "would be removed" in line}
    assert entries(w) == before  # a dry run deletes nothing
    run(trained["manifest"], w, *TRAIN, command="gc")
    kept = entries(w)
    assert kept == {s: 4 * PER_CLASS for s in ("clean_text", "bert", "multilingual", "clean_image", "cnn", "clean_audio", "mfcc", "fuse")}
    assert {s: before[s] - kept.get(s, 0) for s in before} == {s: n for s, n in would.items() if s in before}
    again = run(trained["manifest"], w, *TRAIN, command="train")
    assert again["train"]["cached"] is True and all(c == 0 for c in counts(again, "computed").values())
