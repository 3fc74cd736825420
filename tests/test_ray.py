"""The Ray engine on a real multi-node cluster (``ray.cluster_utils.Cluster``: a head plus two worker nodes
of one CPU each, separate raylets and object stores): same keys and values as the local engine, one
model load per actor, a shared cache both ways, a node lost mid-stage, an actor whose model cannot load.
"""

import json
import os
import threading
import time

import numpy as np
import pandas as pd
import pytest

from dummies import ALL_STAGES, counts, make_items, only, run, write_manifest
from tiny_models import tiny_bert

pytestmark = pytest.mark.ray
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIELD = {"clean_text": "text", "clean_image": "image", "clean_audio": "audio", "transcribe": "text", "ocr": "text"}


def start_cluster(nodes: int):
    """A head (no CPUs: it only hosts the driver) and ``nodes`` worker nodes of one CPU each."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    os.environ["PYTHONPATH"] = os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])  # workers import this tree
    small = {"object_store_memory": 80 * 2**20}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, **small})
    workers = [cluster.add_node(num_cpus=1, **small) for _ in range(nodes)]
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    cluster.wait_for_nodes()
    return ray, cluster, workers


@pytest.fixture(scope="module")
def cluster():
    ray, cluster, _ = start_cluster(2)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def on(cluster, *extra):
    return ["--engine", "ray", "--set", f'ray.address="{cluster.address}"', *extra]


def exports(manifest, workdir, tmp_path, stages=ALL_STAGES, extra=()):
    out = {}
    for stage in stages:
        path = tmp_path / f"{workdir.name}-{stage}.parquet"
        run(manifest, workdir, "--out", str(path), *extra, command=f"export {stage}")
        out[stage] = pd.read_parquet(path).set_index("id").sort_index()
    return out


def assert_same(a, b, stages=ALL_STAGES):
    for stage in stages:
        assert list(a[stage]["key"]) == list(b[stage]["key"])  # same keys
        for x, y in zip(a[stage][FIELD.get(stage, stage)], b[stage][FIELD.get(stage, stage)]):
            if isinstance(x, str):
                assert x == y
            else:
                np.testing.assert_allclose(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64), atol=1e-6)


def shard_files(workdir):
    return {f"{p.parent.name}/{p.name}" for p in (workdir / "cache").glob("*/*") if p.parent.name != "cache"}


def test_cluster_matches_local_with_one_model_load_per_actor(cluster, tmp_path):
    data = tmp_path / "data"
    rows = make_items(data, 0, 12)
    (data / "img" / "bad.png").write_bytes(b"not a png")
    rows[2]["image"] = "img/bad.png"
    # One voice note that speaks and one screenshot that shows text: the words stages run as actor pools too.
    from test_search_words import dialog_png, speech_clip

    speech_clip(data / "aud" / "voice.ogg")
    dialog_png(data / "img" / "dialog.png")
    rows[3]["audio"], rows[4]["image"] = "aud/voice.ogg", "img/dialog.png"
    m = write_manifest(data / "m.csv", rows)
    model = ["--set", f'bert.model="{tiny_bert(tmp_path / "bert")}"', "--set", "bert.batch_size=2"]
    two = ["--set", "ray.stages.bert.actors=2", "--set", "ray.stages.cnn.actors=2"]
    report = run(m, tmp_path / "ray", *model, *on(cluster, *two))
    assert [(f["stage"], f["id"], f["error"]) for f in report["failures"]] == [("clean_image", "item002", "ImageDecodeError")]
    assert "item002" in report["failures"][0]["message"]
    for stage in ("bert", "cnn"):
        info = report["info"][stage]
        assert info["engine"] == "ray"
        assert info["actors"] == info["model_loads"] == 2  # one model load per actor, one pool per run
        assert info["nodes"] == 2  # one actor on each worker node
        assert info["driver_bytes_per_item"] < 4096  # descriptors out, shard names back: no arrays
    local = run(m, tmp_path / "local", *model)
    assert counts(report, "computed") == counts(local, "computed")
    words = ["transcribe", "bert_speech", "ocr", "bert_screen"]
    assert {s: report["stages"][s]["computed"] for s in words} == {s: 1 for s in words}
    assert_same(exports(m, tmp_path / "ray", tmp_path, ALL_STAGES + words, extra=model),
                exports(m, tmp_path / "local", tmp_path, ALL_STAGES + words, extra=model), ALL_STAGES + words)
    # Every shard a worker wrote was committed: nothing is left for the next run's cleanup.
    import sqlite3

    with sqlite3.connect(tmp_path / "ray" / "cache" / "index.sqlite") as db:
        indexed = {n for (n,) in db.execute("SELECT name FROM shards")}
    assert shard_files(tmp_path / "ray") == indexed


def test_ray_and_local_resume_each_other(cluster, tmp_path):
    data = tmp_path / "data"
    rows = make_items(data, 0, 6)
    first, full = write_manifest(data / "first.csv", rows[:3]), write_manifest(data / "all.csv", rows)
    run(first, tmp_path / "w", *on(cluster))  # Ray does half of the items ...
    report = run(full, tmp_path / "w")  # ... the local engine finishes the rest
    assert counts(report, "computed") == {s: 3 for s in ALL_STAGES}
    assert counts(report, "cached") == {s: 3 for s in ALL_STAGES}

    more = write_manifest(data / "more.csv", rows + make_items(data, 6, 2))
    run(more, tmp_path / "w", command="run clean_image")  # local does one stage for the new items ...
    report = run(more, tmp_path / "w", *on(cluster))  # ... Ray picks up everything else
    assert counts(report, "computed") == {**only(clean_text=2, bert=2, cnn=2, clean_audio=2, mfcc=2)}


def test_model_that_cannot_load_on_the_workers_is_a_stage_error(cluster, tmp_path):
    data = tmp_path / "data"
    m = write_manifest(data / "m.csv", make_items(data, 0, 3))
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a keras file")  # exists (so the driver can key it), fails to load in setup
    report = run(m, tmp_path / "w", "--set", f'cnn.weights="{broken}"', *on(cluster), command="run cnn", expect=3)
    assert [e["stage"] for e in report["stage_errors"]] == ["cnn"]
    assert report["stages"]["cnn"]["computed"] == 0 and report["stages"]["clean_image"]["computed"] == 3
