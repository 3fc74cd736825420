"""Two runs from scratch agree exactly; runs on one work directory wait their turn; nothing loads pickles."""

import json
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from dummies import ALL_STAGES, make_items, run, write_manifest

TRAIN = ["--set", "train.epochs=3", "--set", "train.ablation=false", "--set", "train.width=8"]


def test_two_runs_from_scratch_are_identical_features_and_metrics(tmp_path):
    m = write_manifest(tmp_path / "data" / "m.csv", make_items(tmp_path / "data", 0, 12))
    for w in ("a", "b"):
        run(m, tmp_path / w, *TRAIN, command="train")
    for stage in ALL_STAGES + ["fuse"]:
        frames = []
        for w in ("a", "b"):
            out = tmp_path / f"{w}-{stage}.parquet"
            run(m, tmp_path / w, "--out", str(out), command=f"export {stage}")
            frames.append(pd.read_parquet(out).set_index("id").sort_index())
        a, b = frames
        assert list(a.index) == list(b.index) and len(a) == 12
        for column in a.columns:
            assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a[column], b[column])), (stage, column)
    ma, mb = (json.loads((tmp_path / w / "models" / "latest" / "metrics.json").read_text()) for w in ("a", "b"))
    assert ma == mb
    ha, hb = (json.loads((tmp_path / w / "models" / "latest" / "history.json").read_text()) for w in ("a", "b"))
    assert ha == hb


HOLD = """
import sys, time
from filelock import FileLock
lock = FileLock(sys.argv[1]); lock.acquire()
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_a_second_run_waits_for_the_first(tmp_path):
    m = write_manifest(tmp_path / "data" / "m.csv", make_items(tmp_path / "data", 0, 2))
    (tmp_path / "w").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "w" / ".lock"), "2"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        report = run(m, tmp_path / "w", "--set", "run.lock_timeout=60")
        assert time.monotonic() - started >= 1.0  # it waited ...
        assert report["stages"]["mfcc"]["computed"] == 2  # ... then did the work
    finally:
        holder.kill()
        holder.wait()


def test_statistics_with_pickled_objects_are_refused(tmp_path):
    from stages.fuse import Stats

    np.savez(tmp_path / "stats.npz", mean_text=np.array([{"evil": 1}], dtype=object), std_text=np.ones(1))
    (tmp_path / "stats.json").write_text(json.dumps({"digest": "x", "train_ids": []}))
    with pytest.raises(ValueError, match="pickle"):
        Stats.load(tmp_path)


def test_models_with_code_are_refused(tmp_path):
    import keras

    from serving.predict import load_trained

    x = keras.Input((3,), name="text")
    model = keras.Model(x, keras.layers.Lambda(lambda t: t * 2)(x))
    model.save(tmp_path / "model.keras")
    (tmp_path / "labels.json").write_text("[]")
    with pytest.raises(ValueError, match="(?i)lambda|unsafe|safe_mode"):
        load_trained(tmp_path)
