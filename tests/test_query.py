"""Queries are encoded in memory by the stages' own code: same features as a batch run, errors per modality."""

import numpy as np
import pytest

from dummies import SMALL, make_items, run, write_manifest
from tiny_models import tiny_bert


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from pipeline.config import Config
    from pipeline.manifest import load

    root = tmp_path_factory.mktemp("query")
    rows = make_items(root, 0, 4)
    (root / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    rows.append({"id": "bad", "split": "", "label": "a", "text": "only text works here",
                 "image": "img/broken.png", "audio": ""})
    manifest = write_manifest(root / "m.csv", rows)
    bert = f"bert.model={tiny_bert(root / 'bert')}"
    report = run(manifest, root / "w", "--set", bert)
    config = Config.load(None, SMALL + [bert])
    return root, manifest, config, load([str(manifest)]), report


def _cached(root, manifest, stage, config_args):
    import pandas as pd

    from mmpipe_cli.commands import main

    out = root / f"{stage}.parquet"
    args = ["export", stage, "--out", str(out), "-m", str(manifest), "-w", str(root / "w"), "--quiet"]
    for s in config_args:
        args += ["--set", s]
    assert main(args) == 0
    frame = pd.read_parquet(out)
    return {row["id"]: np.asarray(row[stage], np.float32) for _, row in frame.iterrows()}


def test_query_features_equal_the_pipelines(setup):
    from serving.query import QueryEncoder

    root, manifest, config, items, report = setup
    bert = [f"bert.model={config['bert'].model}"]
    encoded = {e.id: e for e in QueryEncoder(config).encode(items)}
    for stage, modality in (("bert", "text"), ("cnn", "image"), ("mfcc", "audio")):
        cached = _cached(root, manifest, stage, SMALL + bert)
        assert set(cached) == {i.id for i in items if modality in encoded[i.id].features}
        for item_id, vector in cached.items():
            np.testing.assert_allclose(encoded[item_id].features[modality], vector, atol=1e-5, rtol=1e-5)


def test_errors_are_per_modality_with_the_pipelines_types(setup):
    from serving.query import QueryEncoder

    _, _, config, items, report = setup
    bad = QueryEncoder(config).encode([i for i in items if i.id == "bad"])[0]
    assert set(bad.features) == {"text", "text_ml"}
    assert bad.errors["image"][0] == "ImageDecodeError"
    assert bad.errors["screen"][0] == "ImageDecodeError"  # its screen text is read from the same file
    assert [(f["stage"], f["error"], f.get("also")) for f in report["failures"] if f["id"] == "bad"] == [
        ("clean_image", "ImageDecodeError", ["ocr"])]  # listed once: the same file, the same error
    assert bad.missing == ["image", "audio", "speech", "screen", "speech_ml", "screen_ml"]
    assert bad.cleaned["text"]["text"] == "only text works here"


def test_query_files_are_capped_and_confined(setup, tmp_path):
    from pipeline.config import Config
    from serving.query import QueryEncoder, query_item

    root, _, config, _, _ = setup
    (tmp_path / "big.txt").write_bytes(b"x" * 3_000_000)
    small = Config.load(None, SMALL + [f"bert.model={config['bert'].model}", "data.max_file_mb=1"])
    encoder = QueryEncoder(small)
    big, outside, missing = encoder.encode([
        query_item("big", text_path="big.txt", base=str(tmp_path)),
        query_item("outside", image="../query0/img/0.png", base=str(tmp_path)),
        query_item("missing", audio="nope.wav", base=str(tmp_path)),
    ])
    assert big.errors["text"][0] == "InputTooLarge" and "data.max_file_mb" in big.errors["text"][1]
    assert outside.errors["image"][0] == "PathEscapesRoot"
    assert missing.errors["audio"][0] == "MissingFile"
    assert not (big.features or outside.features or missing.features)
